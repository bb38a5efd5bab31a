"""`mimic-mjx plot` and `mimic-mjx render`: the files they write decode at the stated sizes."""

import json
import warnings

import numpy as np
import pytest

from mimic_mjx import cli
from mimic_mjx import plot
from mimic_mjx.errors import MimicError

PIL = pytest.importorskip("PIL.Image", reason="plot and render need Pillow")
pytest.importorskip("matplotlib", reason="plot needs matplotlib")


def _write_run(run_dir, with_eval=True, lines=4):
    run_dir.mkdir(parents=True)
    rows = []
    for i in range(lines):
        row = {
            "training/iteration": i + 1, "training/env_steps": 512 * (i + 1), "charts/wall_time_s": 3.0 * (i + 1),
            "training/reward_mean": 0.3 + 0.01 * i, "training/episode_length": 20.0 + i,
            "reward/pose": 0.2, "reward/velocity": 0.01, "reward/alive": 0.0, "termination/fall_contact": 3.0,
        }
        if with_eval and i == 2:
            row["eval/normalized_return"] = 0.25
            row["eval_rsi/normalized_return"] = 0.2  # eval_rsi_episodes: drawn dashed in the same panel
        rows.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    return run_dir


@pytest.mark.timeout(120)
def test_plot_writes_a_png_of_the_stated_size(tmp_path, capsys):
    a = _write_run(tmp_path / "run_a")
    b = _write_run(tmp_path / "run_b", with_eval=False)
    out = tmp_path / "curves.png"
    assert cli.main(["plot", str(a), str(b), "--out", str(out)]) == 0
    # Panels: reward, episode length, eval, entropy, pose, velocity (alive is 0 everywhere:
    # left out) = 6 -> 4 columns, 2 rows per block, 2 blocks (steps, wall time) = 4 x 4 panels
    # of 4 x 3 in at 100 dpi: 1600 x 1200 px.
    assert plot.reward_terms([plot.read_metrics(a)]) == ["reward/pose", "reward/velocity"]
    with PIL.open(out) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (1600, 1200)
    assert f"wrote {out} (1600 x 1200 px)" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_plot_without_evaluation_still_draws(tmp_path):
    run = _write_run(tmp_path / "run", with_eval=False)
    path, size = plot.plot_runs([run], tmp_path / "sub" / "c.png", dpi=50)
    # Same 4 x 4 grid of 4 x 3 in panels at 50 dpi: 800 x 600 px.
    assert size == (800, 600)
    with PIL.open(path) as image:
        assert image.size == size


@pytest.mark.timeout(120)
def test_plot_against_updates(tmp_path, capsys):
    run = _write_run(tmp_path / "run")
    out = tmp_path / "u.png"
    assert cli.main(["plot", str(run), "--x", "updates", "--out", str(out), "--dpi", "50"]) == 0
    assert f"wrote {out} (800 x 600 px)" in capsys.readouterr().out
    with pytest.raises(MimicError, match="--x must be one of steps, updates"):
        plot.plot_runs([run], tmp_path / "v.png", x="seconds")


@pytest.mark.timeout(60)
def test_plot_missing_or_empty_metrics_is_one_line(tmp_path, capsys):
    with pytest.raises(MimicError, match="metrics.jsonl"):
        plot.read_metrics(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    assert cli.main(["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "metrics.jsonl" in err and "\n" not in err


# ----------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def gl_backend():
    from mimic_mjx import render

    try:
        return render.gl_backend()
    except MimicError as e:
        pytest.skip(f"no offscreen OpenGL here: {e}")


@pytest.fixture(scope="module")
def random_policy(gl_backend, tmp_path_factory):
    """A bundle with fresh random weights (tiny networks: nothing is trained), its env and
    actor, and the same policy exported as a policy folder (what `policy.load` reads)."""
    import jax

    from mimic_mjx import checkpoint
    from mimic_mjx import config as cfglib
    from mimic_mjx import evaluate
    from mimic_mjx import env as env_lib
    from mimic_mjx import networks as nets
    from mimic_mjx import policy as policy_lib
    from mimic_mjx import runconfig, train as train_lib

    config = runconfig.TrainConfig(
        env=env_lib.EnvConfig(motion="walk", episode_seconds=0.5),  # a reset inside the 1 s video
        network=runconfig.NetworkConfig(policy_hidden=(8,), value_hidden=(8,)),
        num_envs=1,
    )
    probe = env_lib.ImitationEnv(config.env)
    obs_size = probe.observation_size
    policy, _ = train_lib.make_networks(probe, config)
    params = policy.init(jax.random.PRNGKey(0), np.zeros((1, obs_size), np.float32))
    bundle = policy_lib.PolicyBundle(config, params, nets.init_normalizer(obs_size), 0, "random")
    folder = tmp_path_factory.mktemp("policy") / "random"
    cfglib.save_config(config, folder / policy_lib.CONFIG)
    checkpoint.save_tree(folder / policy_lib.WEIGHTS, {"policy_params": params, "normalizer": bundle.normalizer})
    env = evaluate.eval_env(bundle.config)
    return env, policy_lib.act(bundle, env), folder


def _read_video(path):
    import imageio.v3 as iio

    with warnings.catch_warnings():  # imageio starts ffmpeg by fork + exec; JAX warns of the fork
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        return np.stack(list(iio.imiter(path)))


@pytest.mark.timeout(600)
def test_render_mp4_and_filmstrip(tmp_path, random_policy):
    from mimic_mjx import render

    pytest.importorskip("imageio", reason="reading the video back needs imageio")
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg")
    env, act, _ = random_policy
    out = tmp_path / "walk.mp4"
    # 1 s at 30 fps = 30 frames, one per control step; 3 filmstrip frames.
    result = render.render(env, act, out, seconds=1.0, fps=30, width=96, height=64, filmstrip_count=3,
                           progress=lambda _: None)
    frames = _read_video(out)
    assert result.frames == 30
    assert frames.shape[:3] == (30, 64, 96)
    assert frames.std() > 1.0  # not a blank image
    film = tmp_path / "walk_filmstrip.png"
    assert result.filmstrip == film
    with PIL.open(film) as image:
        assert image.size == (3 * 96, 64)


@pytest.mark.timeout(600)
def test_simulate_rows_and_episode_reset(random_policy):
    from mimic_mjx import render

    env, act, _ = random_policy
    roll = render.simulate(env, act, 20)
    assert roll.qpos.shape == roll.ref_qpos.shape == (21, env.mj_model.nq)
    ended = np.flatnonzero(roll.fell | roll.truncated)
    # episode_seconds 0.5 = 15 control steps: the first episode ends at step 15 at the latest.
    assert ended.size and 1 <= ended[0] <= 15
    k = ended[0]
    np.testing.assert_allclose(roll.clip_time[:k], np.arange(k) / 30, atol=1e-5)
    assert roll.clip_time[k] == 0.0  # the row after the end shows the reset (RSI off: clip time 0)
    assert not (roll.fell[0] or roll.truncated[0])


@pytest.mark.timeout(600)
def test_render_cli_on_a_policy_folder(tmp_path, random_policy, capsys):
    """`mimic-mjx render FOLDER`: policy.load, evaluate.eval_env, act and render, end to end (GIF)."""
    pytest.importorskip("imageio", reason="reading the video back needs imageio")
    _, _, folder = random_policy
    out = tmp_path / "v.gif"
    args = ["render", str(folder), "--out", str(out), "--seconds", "0.5", "--width", "64", "--height", "48",
            "--frames", "2", "--filmstrip", str(tmp_path / "strip.png")]
    assert cli.main(args) == 0
    # 0.5 s at the default 30 fps = 15 frames of 64 x 48; filmstrip 2 x 64 = 128 px wide.
    assert _read_video(out).shape[:3] == (15, 48, 64)
    with PIL.open(tmp_path / "strip.png") as image:
        assert image.size == (128, 48)
    printed = capsys.readouterr().out
    assert f"wrote {out} (15 frames, 64 x 48 px, 30 fps" in printed
    assert "strip.png (2 frames, 128 x 48 px)" in printed


@pytest.mark.timeout(60)
def test_render_frame_schedule_other_fps():
    from mimic_mjx import render

    # 2 s at 15 fps = 30 frames, every second control step (30 Hz / 15 fps).
    steps = render.frame_steps(2.0, 15.0)
    assert len(steps) == 30 and list(steps[:3]) == [0, 2, 4] and steps[-1] == 58
    assert list(render.filmstrip_frames(30, 6)) == [0, 6, 12, 17, 23, 29]  # round(29 k / 5)


@pytest.mark.timeout(120)
def test_render_errors_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["render", str(tmp_path / "no_such_policy"), "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no_such_policy" in err and "\n" not in err
    from mimic_mjx import render

    with pytest.raises(MimicError, match="cannot write"):
        render.check_writable(blocker / "v.mp4", "--out")
    with pytest.raises(MimicError, match=r"\.mp4 or \.gif"):
        render.render(None, None, tmp_path / "v.avi")
    with pytest.raises(MimicError, match="even"):
        render.render(None, None, tmp_path / "v.mp4", width=95, height=64)


@pytest.mark.timeout(60)
def test_gl_backend_honours_mujoco_gl_then_tries_egl_then_osmesa(monkeypatch):
    from mimic_mjx import render

    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    tried = []
    try:
        render.gl_backend.cache_clear()
        monkeypatch.setenv("MUJOCO_GL", "OSMesa")
        assert render.gl_backend() == "osmesa"  # set by the user: no probing
        monkeypatch.delenv("MUJOCO_GL")
        render.gl_backend.cache_clear()
        monkeypatch.setattr(render, "_probe", lambda b: tried.append(b) or b == "osmesa")
        assert render.gl_backend() == "osmesa" and tried == ["egl", "osmesa"]
        render.gl_backend.cache_clear()
        monkeypatch.setattr(render, "_probe", lambda b: False)
        with pytest.raises(MimicError, match="libegl1 .*libosmesa6"):
            render.gl_backend()
    finally:
        render.gl_backend.cache_clear()
