from mimic_mjx.cli import main

raise SystemExit(main())
