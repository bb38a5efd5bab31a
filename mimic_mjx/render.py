"""`mimic-mjx render`: a video and a filmstrip of a policy beside its reference motion.

The deterministic policy (`policy.act`) drives one environment from `evaluate.eval_env` (RSI
off: the episode starts at clip time 0); the step is jitted once and a Python loop collects
each control step's `qpos` and the reference `qpos` at the same clip time. Rendering is
host-side, with MuJoCo's own OpenGL renderer (`mjv_updateScene` / `mjr_render`) in an
offscreen context: the simulated character solid, the reference as a translucent blue ghost
1 m to its left (+y), the camera following the simulated root. A finished episode has
already been reset by `batch.step_batch`; the frame shows the reset state and says that it fell.

The GL backend: `MUJOCO_GL` if set (egl, osmesa, glfw), else the first of egl, osmesa that
opens a context in a throwaway subprocess. The context is made here rather than by
`mujoco.Renderer`, which fixes its backend from `MUJOCO_GL` once, at `import mujoco`, so a
process that imported MuJoCo earlier (a test session, a notebook) could not render headless.

Video: MP4 (H.264) through imageio-ffmpeg, which ships its own ffmpeg binary, or GIF through
Pillow, chosen by the suffix of `--out`; both are dependencies of the package.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import subprocess
import sys
import warnings
from typing import Callable

import jax
import mujoco
import numpy as np

from mimic_mjx import batch as batch_lib
from mimic_mjx import compiled
from mimic_mjx import env as env_lib
from mimic_mjx import model as model_lib
from mimic_mjx import motion
from mimic_mjx.errors import MimicError

GL_BACKENDS = ("egl", "osmesa")  # headless backends, in the order they are tried
GHOST_OFFSET = np.array([0.0, 1.0, 0.0])  # reference drawn 1 m to the character's left (+y), m
GHOST_RGBA = np.array([0.45, 0.7, 1.0, 0.35], np.float32)  # translucent blue
BODY_RGBA = np.array([0.9, 0.6, 0.35, 1.0], np.float32)  # the simulated character: solid orange
# The model has one overhead directional light and MuJoCo's default headlight (ambient 0.1,
# diffuse 0.4), which left the bodies barely visible from the side; these were picked by eye.
HEADLIGHT = dict(ambient=(0.35, 0.35, 0.35), diffuse=(0.7, 0.7, 0.7))
FALL_BANNER_S = 1.0  # how long a frame says "fell" after a fall, s
# A three-quarter view from the front right (azimuth picked by eye): the 1 m offset separates
# the two figures on screen and the gait is seen from the side. Distances in m, angles in deg.
CAMERA = dict(distance=4.0, azimuth=130.0, elevation=-12.0, height=0.85)
VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_SIZE = 4096  # pixels; the offscreen framebuffer is made this large at most


# ------------------------------------------------------------------------ GL context
_PROBE = (
    "import mujoco\n"
    "from mujoco.{backend} import GLContext\n"
    "gl = GLContext(16, 16); gl.make_current()\n"
    "mujoco.MjrContext(mujoco.MjModel.from_xml_string('<mujoco/>'), 150)\n"
)


def _probe(backend: str) -> bool:
    """Whether `backend` opens an offscreen GL context here (in a subprocess: a failed
    attempt would leave PyOpenGL bound to that platform in this process)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        # close_fds=False lets CPython spawn with posix_spawn instead of fork: JAX warns (rightly)
        # about forking its threads, and the probe needs none of this process's files.
        done = subprocess.run([sys.executable, "-c", _PROBE.format(backend=backend)], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120, close_fds=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=1)
def gl_backend() -> str:
    """The GL backend to render with: MUJOCO_GL if set, else the first of GL_BACKENDS that works.

    A process whose PyOpenGL is already bound (PYOPENGL_PLATFORM set) keeps that platform.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    bound = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    if bound in GL_BACKENDS:
        return bound
    for backend in GL_BACKENDS:
        if _probe(backend):
            return backend
    raise MimicError("no offscreen OpenGL: neither MUJOCO_GL=egl (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) "
                     "nor MUJOCO_GL=osmesa (Debian: libosmesa6) opens a context")


def _gl_context(backend: str, width: int, height: int):
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        elif backend in ("glfw", "glx"):
            from mujoco.glfw import GLContext
        else:
            raise MimicError(f"MUJOCO_GL={backend!r} is not a backend render knows (egl, osmesa, glfw)")
        context = GLContext(width, height)
        context.make_current()
        return context
    except MimicError:
        raise
    except Exception as e:  # PyOpenGL and the GL libraries raise many kinds
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MimicError(f"cannot open an offscreen OpenGL context with MUJOCO_GL={backend}: {message}") from None


class Offscreen:
    """An offscreen MuJoCo renderer for one model: the character, its ghost, text overlays."""

    def __init__(self, mj_model: mujoco.MjModel, width: int, height: int, backend: str | None = None):
        """`mj_model`'s visual settings (framebuffer size, headlight) are changed: pass a copy."""
        self.model = mj_model
        self.width, self.height = width, height
        # The framebuffer must hold the image; the model's default is 640 x 480.
        mj_model.vis.global_.offwidth = max(mj_model.vis.global_.offwidth, width)
        mj_model.vis.global_.offheight = max(mj_model.vis.global_.offheight, height)
        mj_model.vis.headlight.ambient[:] = HEADLIGHT["ambient"]
        mj_model.vis.headlight.diffuse[:] = HEADLIGHT["diffuse"]
        self._gl = _gl_context(backend or gl_backend(), width, height)
        self._context = mujoco.MjrContext(mj_model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self.scene = mujoco.MjvScene(mj_model, maxgeom=2 * mj_model.ngeom + 100)
        self.option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.distance, self.camera.azimuth = CAMERA["distance"], CAMERA["azimuth"]
        self.camera.elevation = CAMERA["elevation"]

    def render(self, data: mujoco.MjData, ghost: mujoco.MjData | None = None, overlays=()) -> np.ndarray:
        """RGB image [height, width, 3] uint8 of `data` (kinematics done), `ghost` translucent.

        `overlays`: (mjtGridPos, left column, right column) text blocks drawn on top.
        """
        root = data.qpos[0:3]
        self.camera.lookat[:] = (root[0] + GHOST_OFFSET[0] / 2, root[1] + GHOST_OFFSET[1] / 2, CAMERA["height"])
        mujoco.mjv_updateScene(self.model, data, self.option, self._perturb, self.camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self.scene)
        for i in range(self.scene.ngeom):
            if self.scene.geoms[i].category == mujoco.mjtCatBit.mjCAT_DYNAMIC:
                self.scene.geoms[i].rgba[:] = BODY_RGBA
        if ghost is not None:
            first = self.scene.ngeom
            mujoco.mjv_addGeoms(self.model, ghost, self.option, self._perturb, mujoco.mjtCatBit.mjCAT_DYNAMIC,
                                self.scene)
            for i in range(first, self.scene.ngeom):
                self.scene.geoms[i].rgba[:] = GHOST_RGBA
        mujoco.mjr_render(self._rect, self.scene, self._context)
        for gridpos, left, right in overlays:
            mujoco.mjr_overlay(mujoco.mjtFont.mjFONT_NORMAL, gridpos, self._rect, left, right, self._context)
        rgb = np.empty((self.height, self.width, 3), np.uint8)
        mujoco.mjr_readPixels(rgb, None, self._rect, self._context)
        return np.flipud(rgb)  # OpenGL's rows run bottom-up

    def close(self) -> None:
        self._context.free()
        self._gl.free()


# --------------------------------------------------------------------------- rollout
@dataclasses.dataclass
class Rollout:
    """One environment, host arrays; row k is the state after k control steps (row 0: reset)."""

    qpos: np.ndarray  # [K+1, nq] simulated physics state (after any auto-reset)
    ref_qpos: np.ndarray  # [K+1, nq] reference at the same clip time
    clip_time: np.ndarray  # [K+1] clip time of the state, s
    fell: np.ndarray  # [K+1] bool: the step into this row ended its episode by a fall (then reset)
    truncated: np.ndarray  # [K+1] bool: the step into this row hit the time limit (then reset)


@functools.lru_cache(maxsize=4)
def _programs(env: env_lib.ImitationEnv, act: Callable) -> tuple[Callable, Callable]:
    """Jitted `start(key)` and `step(state)`, each returning (state [1], reference qpos [1, nq]).

    Cached per (env, actor), so rendering the same policy again does not compile again.
    """
    def reference(t):
        return jax.vmap(lambda ti: motion.sample(env.clip_arrays, ti)[0])(t)

    def start(key):
        state = batch_lib.reset_batch(env, key, 1)
        return state, reference(state.time)

    def step(state):
        state = batch_lib.step_batch(env, state, act(state.obs))
        return state, reference(state.time)

    return jax.jit(start), jax.jit(step)


def simulate(env: env_lib.ImitationEnv, act: Callable, steps: int, seed: int = 0) -> Rollout:
    """`steps` control steps of `act` (obs [1, D] -> actions [1, A]) in one environment."""
    start, step = _programs(env, act)
    state, ref = start(jax.random.PRNGKey(seed))
    rows = [(state, ref)]
    for _ in range(steps):
        state, ref = step(state)
        rows.append((state, ref))
    rows = jax.device_get(rows)
    return Rollout(
        qpos=np.stack([s.data.qpos[0] for s, _ in rows]),
        ref_qpos=np.stack([r[0] for _, r in rows]),
        clip_time=np.array([s.time[0] for s, _ in rows]),
        fell=np.array([s.terminated[0] for s, _ in rows]),
        truncated=np.array([s.truncated[0] for s, _ in rows]),
    )


def frame_steps(seconds: float, fps: float) -> np.ndarray:
    """Control step shown by each frame [round(seconds * fps)]: frame f is at time f / fps."""
    n = int(round(seconds * fps))
    return np.round(np.arange(n) * model_lib.CONTROL_HZ / fps).astype(int)


def filmstrip_frames(n_frames: int, k: int) -> np.ndarray:
    """Indices of `k` frames evenly spaced over `n_frames`, first and last included."""
    return np.round(np.linspace(0, n_frames - 1, k)).astype(int)


# ---------------------------------------------------------------------------- output
def check_writable(path: pathlib.Path, what: str) -> None:
    """Raise a one-line MimicError now if `path` cannot be written (before minutes of work)."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise MimicError(f"{what} {path}: cannot write ({e.strerror or e})") from None
    if not existed:
        path.unlink()


class _VideoWriter:
    """MP4 through imageio-ffmpeg (streamed) or GIF through Pillow (written at close)."""

    def __init__(self, path: pathlib.Path, fps: float):
        self.path, self.fps = path, fps
        self._gif: list | None = None
        self._started = False
        if path.suffix.lower() == ".gif":
            self._gif = []
            return
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (its bundled ffmpeg binary)
        except ImportError:
            raise MimicError("writing MP4 needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg "
                             "(or give --out NAME.gif)") from None
        # macro_block_size=1: keep the frame size as asked (imageio would pad to 16).
        self._mp4 = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                       pixelformat="yuv420p", quality=8, macro_block_size=1,
                                       ffmpeg_log_level="error")

    def append(self, frame: np.ndarray) -> None:
        if self._gif is not None:
            from PIL import Image

            self._gif.append(Image.fromarray(frame).quantize(colors=256, dither=Image.Dither.NONE))
        elif self._started:
            self._mp4.append_data(frame)
        else:
            # The first frame starts ffmpeg with subprocess (fork + exec, no Python code in the
            # child), which JAX's fork hook warns about as if the child went on running Python.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                self._mp4.append_data(frame)
            self._started = True

    def close(self) -> None:
        if self._gif is None:
            self._mp4.close()
        elif self._gif:
            # GIF delays are in 1/100 s: 30 fps is stored as 30 ms or 40 ms per frame.
            self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:],
                              duration=round(1000 / self.fps), loop=0)


@dataclasses.dataclass
class RenderResult:
    video: pathlib.Path
    filmstrip: pathlib.Path
    frames: int  # frames in the video
    size: tuple[int, int]  # (width, height) of a frame, pixels
    filmstrip_size: tuple[int, int]  # (width, height) of the filmstrip, pixels
    falls: list[float]  # times (s since the start) at which the episode ended by a fall


def _overlays(t: float, clip_time: float, last_fall: float | None, label: str) -> list:
    """Text of a frame at time `t` (s): times, legend and, for a while after a fall, a banner."""
    grid = mujoco.mjtGridPos
    # Times top left, legend bottom left: side by side at the top, the two blocks overlap at
    # GIF sizes (320 px wide). A fall banner takes the top right.
    out = [(grid.mjGRID_TOPLEFT, "time\nclip time", f"{t:.2f} s\n{clip_time:.2f} s"),
           (grid.mjGRID_BOTTOMLEFT, f"{label}\nblue ghost: reference", "")]
    if last_fall is not None and t - last_fall < FALL_BANNER_S:
        out.append((grid.mjGRID_TOPRIGHT, f"FELL at {last_fall:.2f} s\nepisode restarted", ""))
    return out


def check_request(out, filmstrip, seconds: float, fps: float, width: int, height: int,
                  filmstrip_count: int) -> tuple[pathlib.Path, pathlib.Path, np.ndarray]:
    """Validate a render request before any work: (video path, filmstrip path, `frame_steps`).

    Each problem is a one-line MimicError naming the flag: a suffix other than .mp4/.gif, an
    unwritable path, sizes or counts out of range.
    """
    out = pathlib.Path(out)
    filmstrip = out.with_name(f"{out.stem}_filmstrip.png") if filmstrip is None else pathlib.Path(filmstrip)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise MimicError(f"--out {out}: the video must end in {' or '.join(VIDEO_SUFFIXES)}")
    if not (seconds > 0 and fps > 0):
        raise MimicError(f"--seconds and --fps must be > 0, got {seconds} and {fps}")
    if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
        raise MimicError(f"--width and --height must be 1..{MAX_SIZE}, got {width} x {height}")
    steps = frame_steps(seconds, fps)
    if len(steps) < 1:
        raise MimicError(f"{seconds} s at {fps} fps is no frame")
    if not 1 <= filmstrip_count <= len(steps):
        raise MimicError(f"--frames must be 1..{len(steps)} (the video's frames), got {filmstrip_count}")
    if out.suffix.lower() == ".mp4" and (width % 2 or height % 2):  # yuv420p halves the chroma planes
        raise MimicError(f"MP4 needs an even --width and --height, got {width} x {height}")
    check_writable(out, "--out")
    check_writable(filmstrip, "--filmstrip")
    return out, filmstrip, steps


def render(env: env_lib.ImitationEnv, act: Callable, out: str | pathlib.Path, *, seconds: float = 5.0,
           fps: float = model_lib.CONTROL_HZ, width: int = 640, height: int = 480,
           filmstrip: str | pathlib.Path | None = None, filmstrip_count: int = 6, seed: int = 0,
           label: str = "policy", progress: Callable[[str], object] = print) -> RenderResult:
    """Render `act` in `env` to the video `out` and a filmstrip PNG of `filmstrip_count` frames.

    round(seconds * fps) frames, frame f showing the state at time f / fps (fps 30 = one frame
    per control step). `filmstrip` defaults to `<out stem>_filmstrip.png`.
    """
    out, filmstrip, steps = check_request(out, filmstrip, seconds, fps, width, height, filmstrip_count)
    screen = Offscreen(model_lib.load_model(env.config.control), width, height)  # fails before simulating
    writer = _VideoWriter(out, fps)

    progress(f"simulating {int(steps[-1])} control steps ...")
    roll = simulate(env, act, int(steps[-1]), seed)
    falls = [float(k / model_lib.CONTROL_HZ) for k in np.flatnonzero(roll.fell)]
    for t in falls:
        progress(f"fell at {t:.2f} s; the episode restarted")
    progress(f"rendering {len(steps)} frames ({width} x {height}, {gl_backend()}) ...")
    sim, ghost = mujoco.MjData(screen.model), mujoco.MjData(screen.model)
    strip_at = set(filmstrip_frames(len(steps), filmstrip_count).tolist())
    strip = []
    try:
        for f, k in enumerate(steps):
            sim.qpos[:] = roll.qpos[k]
            ghost.qpos[:] = roll.ref_qpos[k]
            ghost.qpos[0:3] += GHOST_OFFSET
            mujoco.mj_kinematics(screen.model, sim)
            mujoco.mj_kinematics(screen.model, ghost)
            t = k / model_lib.CONTROL_HZ
            last_fall = max((x for x in falls if x <= t), default=None)
            frame = screen.render(sim, ghost, _overlays(t, float(roll.clip_time[k]), last_fall, label))
            writer.append(frame)
            if f in strip_at:
                strip.append(frame)
    finally:
        writer.close()
        screen.close()
    from PIL import Image

    tiles = np.concatenate(strip, axis=1)  # [height, K * width, 3], left to right in time
    Image.fromarray(tiles).save(filmstrip)
    return RenderResult(out, filmstrip, len(steps), (width, height), (tiles.shape[1], tiles.shape[0]), falls)


# ------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    """`mimic-mjx render` arguments."""
    parser.add_argument("source", metavar="RUN_OR_POLICY", help="a shipped policy name (e.g. walk), a policy "
                        "folder or a run directory (latest checkpoint)")
    parser.add_argument("--out", default=None, help="video to write, .mp4 or .gif (default: <source name>.mp4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the video, s (default 5)")
    parser.add_argument("--fps", type=float, default=model_lib.CONTROL_HZ,
                        help=f"frames per second (default {model_lib.CONTROL_HZ:g}: one per control step)")
    parser.add_argument("--width", type=int, default=640, help="frame width, pixels (default 640)")
    parser.add_argument("--height", type=int, default=480, help="frame height, pixels (default 480)")
    parser.add_argument("--filmstrip", default=None, help="filmstrip PNG (default: <out stem>_filmstrip.png)")
    parser.add_argument("--frames", type=int, default=6, help="frames in the filmstrip (default 6)")
    parser.add_argument("--rsi", action="store_true", help="start at a random clip time (default: clip time 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the reset (with --rsi)")


def run_cli(args) -> int:
    """Run `mimic-mjx render`; MimicError propagates to the CLI's one-line handler."""
    from mimic_mjx import evaluate as eval_lib
    from mimic_mjx import policy as policy_lib

    out = args.out or f"{pathlib.Path(args.source).name}.mp4"
    # Flags and GL first: loading a checkpoint and compiling the step take tens of seconds.
    check_request(out, args.filmstrip, args.seconds, args.fps, args.width, args.height, args.frames)
    gl_backend()
    compiled.enable_compile_cache()
    bundle = policy_lib.load(args.source)
    env = eval_lib.eval_env(bundle.config, rsi=args.rsi)
    label = f"{pathlib.Path(bundle.source).name}, {bundle.env_steps:,} env steps"
    result = render(env, policy_lib.act(bundle, env), out, seconds=args.seconds, fps=args.fps, width=args.width,
                    height=args.height, filmstrip=args.filmstrip, filmstrip_count=args.frames, seed=args.seed,
                    label=label)
    width, height = result.size
    print(f"wrote {result.video} ({result.frames} frames, {width} x {height} px, {args.fps:g} fps; "
          f"{len(result.falls)} fall(s))")
    strip_width, strip_height = result.filmstrip_size
    print(f"wrote {result.filmstrip} ({args.frames} frames, {strip_width} x {strip_height} px)")
    return 0
