"""The imitation environment: pure `reset(rng) -> State` and `step(state, action) -> State`.

One environment per call; batches come from `jax.vmap` (batch.py: `reset_batch`, `step_batch`). The humanoid is
driven at 30 Hz toward a reference clip: actions are PD targets for the 28 hinge coordinates
(or torques), scored by `reward.py` against the clip sampled at the same time. Episodes start
at a random clip time (reference state initialisation), end early when the character falls
(early termination) or its physics turns non-finite, and are truncated at a time limit.
Finished environments reset themselves inside `step`, so a batch runs forever.

The reward config travels in the state (`State.reward_config`), so vmapping `reset` over a
stack of configs gives every environment (or sweep member) its own reward, with one compile.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mimic_mjx import config as cfglib
from mimic_mjx import model as model_lib
from mimic_mjx import motion
from mimic_mjx.motion import REFERENCE_VELOCITY  # the field `motion` shadows the module in EnvConfig
from mimic_mjx import physics as physics_lib
from mimic_mjx import quaternion as quat
from mimic_mjx import reward as reward_lib
from mimic_mjx.errors import MimicError

# Why an episode ended, declared once (mjlab's termination terms): name -> is it a time-out?
# A time-out (truncation) bootstraps from the final observation; a failure earns 0 and does
# not. One step may end for several reasons (a fall by contact and by root height at once);
# each is counted as `termination/<reason>`.
TERMINATIONS = {
    "fall_contact": False,  # a fall body's geom at or below the floor (see env.fall_contact)
    "root_height": False,  # root below env.min_root_height
    "root_drift": False,  # root farther than env.max_root_drift from the reference's, horizontally
    "body_error": False,  # some body farther than env.max_body_error from the reference's
    "nonfinite": False,  # NaN/inf physics, or MuJoCo C reset an unstable simulation
    "time_limit": True,  # env.episode_seconds reached
    "clip_end": True,  # a clip that does not loop has ended
}


# env.fall_contact's rules; each names the bodies whose floor contact ends an episode.
FALL_CONTACT = ("non_feet", "non_feet_hands", "deepmimic", "reference")


@flax.struct.dataclass
class EnvConfig:
    """Environment settings. Static fields fix shapes or code paths; others are leaves."""

    motion: str = cfglib.field("walk", "clip name or path", static=True)
    control: str = cfglib.field("pd", "pd: actions are PD targets in each joint's range; torque: scaled torques", static=True,
                                 choices=("pd", "torque"))
    rsi: bool = cfglib.field(True, "reference state initialisation: start at a uniform random clip time (else 0)", static=True)
    # The seed diagnosis's option 4 (issue 30, docs/seed_remedies.md): a start that is not one
    # fixed frame without DeepMimic's random clip time. A leaf, so a sweep may vary it.
    start_pose_noise: float = cfglib.field(
        0.0, "std of Gaussian noise added to the 28 joint coordinates of every episode's start pose, rad; "
        "0: the reference pose exactly", ge=0)
    early_termination: bool = cfglib.field(True, "end an episode when a fall is detected", static=True)
    # DeepMimic sets this per clip in its args files (`--fall_contact_bodies`, ids of
    # humanoid3d.txt): every body but the feet for most clips, also not the hands for
    # cartwheel, only root, chest and neck for crawl, and no contact fall at all for roll and
    # the two getups, whose clips lie on the floor. `reference` is this project's rule for
    # those three (docs/clips.md): a contact is a fall only where the clip's own body is clear
    # of the floor, so staying down when the clip gets up still fails.
    fall_contact: str = cfglib.field(
        "non_feet", "bodies whose floor contact is a fall: non_feet (all but the feet), non_feet_hands (all but the "
        "feet and hands), deepmimic (root, chest, neck), reference (all but the feet, only where the clip's same "
        "body is more than env.fall_contact_clearance above the floor)", static=True, choices=FALL_CONTACT)
    fall_contact_clearance: float = cfglib.field(
        0.2, "fall_contact=reference: a body's floor contact is a fall only where the clip's body is higher than "
        "this, m", ge=0)
    episode_seconds: float = cfglib.field(20.0, "time limit (truncation), s; DeepMimic's 20 s episodes", static=True, gt=0)
    min_root_height: float = cfglib.field(0.3, "a fall also when the root is below this height, m")
    max_root_drift: float = cfglib.field(
        0.0, "a failure also when the root is farther than this from the reference root, horizontally, m; "
        "0: off (evaluation always turns it off and measures the drift instead)", ge=0)
    # MimicKit ends an episode when a body is more than 1 m from the reference (its
    # pose_termination_dist); BeyondMimic uses 0.25 m. A tracking failure, unlike a fall.
    max_body_error: float = cfglib.field(
        0.0, "a failure also when any body is farther than this from the reference's body, m; 0: off "
        "(evaluation turns it off)", ge=0)
    future_frames: tuple[int, ...] = cfglib.field((), "control steps ahead whose reference pose is observed, e.g. [1, 2]", static=True, ge=1)
    physics: str = cfglib.field(
        "auto", "simulator: mjx (MuJoCo MJX, traced), native (MuJoCo C via a callback), auto: mjx on an "
        "accelerator, native on CPU", static=True, choices=physics_lib.BACKENDS)
    physics_threads: int = cfglib.field(0, "native backend threads; 0: the usable cores", static=True, ge=0)
    reference_velocity: str = cfglib.field(
        "forward", "the reference's velocity between clip frames (the velocity reward, a start's velocities): "
        "forward (each frame's forward difference, held across the frame: half a frame ahead at a frame) or "
        "central (central differences at the frames, interpolated linearly)", static=True,
        choices=REFERENCE_VELOCITY)
    action_offset: str = cfglib.field(
        "mid_range", "pd targets are offset + half_range * action, offset = mid_range (of each joint's range) "
        "or reference (the clip's pose one control step ahead: actions are corrections)", static=True,
        choices=("mid_range", "reference"))


@flax.struct.dataclass
class State:
    """One environment. Shapes for a single env; vmapped states add a leading [B]."""

    data: physics_lib.PhysicsState  # physics state (qpos [35], qvel [34], kinematics)
    obs: jax.Array  # [obs_dim] observation for the next action (after any auto-reset)
    final_obs: jax.Array  # [obs_dim] observation reached by the last step, before auto-reset
    reward: jax.Array  # [] reward of the last step
    reward_terms: dict  # name -> [] each term of the last step's reward (reward/<name>)
    termination: dict  # name -> [] bool, why the last step ended its episode (TERMINATIONS)
    errors: reward_lib.Errors  # raw errors of the last step, for re-scoring
    terminated: jax.Array  # [] bool: the last step ended the episode by a fall or non-finite physics
    truncated: jax.Array  # [] bool: the last step hit the time limit (bootstrap from final_obs)
    time: jax.Array  # [] clip time of the current state, s
    step_count: jax.Array  # [] int, steps taken in the current episode
    nonfinite_count: jax.Array  # [] int, episodes ended by NaN/inf physics (cumulative)
    rng: jax.Array
    reward_config: reward_lib.RewardConfig

    @property
    def done(self):
        return self.terminated | self.truncated


class ImitationEnv:
    """Pure reset/step over `State`; the object only holds constants (model, clip, indices)."""

    def __init__(self, config: EnvConfig, clip: motion.Clip | None = None, reward_config=None):
        # The ranges are the fields' own declarations (a config built in code skips the loader).
        cfglib.validate(config, prefix="env.")
        self.config = config
        self.clip = clip if clip is not None else motion.load_clip(config.motion)
        self.clip_arrays = self.clip.arrays(config.reference_velocity)
        self.reward_config = reward_config if reward_config is not None else reward_lib.preset("deepmimic_paper")
        self.mj_model = model_lib.load_model(config.control)
        self.physics = physics_lib.make(self.mj_model, config.physics, config.physics_threads or None)
        self.mjx_model = self.physics.mjx_model
        self.substeps = self.physics.substeps
        self.dt = 1.0 / model_lib.CONTROL_HZ
        self.max_steps = int(round(config.episode_seconds * model_lib.CONTROL_HZ))
        m = self.mj_model
        self.action_size = m.nu
        self._act_qpos = np.array([m.jnt_qposadr[m.actuator_trnid[i, 0]] for i in range(m.nu)])
        lo, hi = model_lib.load_model("pd").actuator_ctrlrange.T
        self._act_mid, self._act_half = (hi + lo) / 2, (hi - lo) / 2
        self._joint_body = model_lib.body_ids(m, model_lib.JOINTS)
        self._joint_parent = m.body_parentid[self._joint_body]
        self._ee_body = model_lib.body_ids(m, model_lib.END_EFFECTORS)
        self._bodies = np.arange(1, m.nbody)  # every body but the world
        self._body_mass = m.body_mass[1:] / m.body_mass[1:].sum()
        allowed = set(model_lib.body_ids(m, model_lib.FEET).tolist())
        if config.fall_contact == "deepmimic":
            # humanoid3d.txt BodyDefs "EnableFallContact": 1 only for root, chest and neck.
            falls = set(model_lib.body_ids(m, ("root", "chest", "neck")).tolist())
        else:
            if config.fall_contact == "non_feet_hands":
                allowed |= set(model_lib.body_ids(m, model_lib.HANDS).tolist())
            falls = set(range(1, m.nbody)) - allowed
        self._fall_geom = np.array([m.geom_bodyid[g] in falls for g in range(m.ngeom)])
        self._lo, self._hi = lo, hi
        future = jnp.zeros((len(config.future_frames), self.mj_model.nq))
        rest = self.physics.put(self.physics.data0.qpos, self.physics.data0.qvel)
        self.observation_size = int(self._observe(rest, jnp.zeros(()), future).shape[0])

    # ----------------------------------------------------------------- physics helpers
    def _forward_kinematics(self, data):
        """Positions, orientations and body velocities of `data.qpos`/`data.qvel`."""
        return self.physics.forward_kinematics(data)

    def reference(self, t):
        """Reference physics state at clip time t: (data with kinematics, lowest point)."""
        qpos, qvel, low = motion.sample(self.clip_arrays, t)
        return self._forward_kinematics(self.physics.put(qpos, qvel)), low

    def kinematics(self, data) -> reward_lib.Kinematics:
        """What the reward compares, from a data with forward kinematics done."""
        xq = data.xquat
        world_w = data.cvel[:, 0:3]  # body angular velocities, world frame
        child, parent = self._joint_body, self._joint_parent
        rel_w = world_w[child] - world_w[parent]
        root_pos, root_quat = data.qpos[0:3], data.qpos[3:7]
        heading = quat.yaw_quat(quat.yaw(root_quat))
        ee = quat.rotate(quat.conj(heading), data.xpos[self._ee_body] - root_pos)
        ee = ee.at[:, 2].set(data.xpos[self._ee_body, 2])  # height above the floor (DeepMimic)
        return reward_lib.Kinematics(
            joint_quat=quat.mul(quat.conj(xq[parent]), xq[child]),
            joint_angvel=quat.rotate(quat.conj(xq[child]), rel_w),
            joint_pos=data.qpos[7:],
            joint_vel=data.qvel[6:],
            end_effectors=ee,
            root_pos=root_pos,
            root_quat=root_quat,
            root_linvel=data.qvel[0:3],
            root_angvel=quat.rotate(root_quat, data.qvel[3:6]),
            com_pos=data.subtree_com[1],
            com_vel=self._com_velocity(data),
        )

    def _body_velocities(self, data):
        """Angular [nbody-1, 3] and origin linear [nbody-1, 3] velocities, world frame."""
        # cvel is (angular, linear) about the tree's centre of mass subtree_com[1].
        w = data.cvel[self._bodies, 0:3]
        v = data.cvel[self._bodies, 3:6] + jnp.cross(w, data.xpos[self._bodies] - data.subtree_com[1])
        return w, v

    def _com_velocity(self, data):
        w = data.cvel[self._bodies, 0:3]
        v = data.cvel[self._bodies, 3:6] + jnp.cross(w, data.xipos[self._bodies] - data.subtree_com[1])
        return jnp.sum(self._body_mass[:, None] * v, axis=0)

    # ------------------------------------------------------------------- observation
    def _observe(self, data, t, ref_qpos_future):
        """DeepMimic-style observation, invariant to world heading and horizontal position.

        Blocks (15 bodies, all in the root's heading frame, i.e. yaw removed):
          root height                                1
          body positions relative to the root        14 x 3 = 42 (root itself omitted)
          body orientations, 6D (two matrix columns) 15 x 6 = 90
          body linear velocities                     15 x 3 = 45
          body angular velocities                    15 x 3 = 45
          clip phase (sin, cos)                      2
          per future frame k in config.future_frames: reference hinge angles (28), root
          height (1), root offset from the current root (2, horizontal), root orientation
          6D (6) = 37 each.
        Total without future frames: 225.
        """
        root_pos, root_quat = data.qpos[0:3], data.qpos[3:7]
        inv = quat.conj(quat.yaw_quat(quat.yaw(root_quat)))
        pos = quat.rotate(inv, data.xpos[self._bodies[1:]] - root_pos)
        rot = quat.to_matrix(quat.mul(inv, data.xquat[self._bodies]))[..., :2].reshape(-1)
        w, v = self._body_velocities(data)
        parts = [root_pos[2:3], pos.reshape(-1), rot, quat.rotate(inv, v).reshape(-1), quat.rotate(inv, w).reshape(-1)]
        parts.append(self._phase(t))
        for k in range(len(self.config.future_frames)):
            q = ref_qpos_future[k]
            parts += [
                q[7:],
                q[2:3],
                quat.rotate(inv, q[0:3] - root_pos)[:2],
                quat.to_matrix(quat.mul(inv, q[3:7]))[..., :2].reshape(-1),
            ]
        return jnp.concatenate(parts)

    def _phase(self, t):
        duration = self.clip_arrays.duration
        if self.clip.loop:
            phase = jnp.mod(t, duration) / duration
        else:  # half a circle keeps start and end apart for clips that do not loop
            phase = 0.5 * jnp.clip(t / duration, 0.0, 1.0)
        return jnp.stack([jnp.sin(2 * jnp.pi * phase), jnp.cos(2 * jnp.pi * phase)])

    def _future_qpos(self, t):
        ks = self.config.future_frames
        if not ks:
            return jnp.zeros((0, self.mj_model.nq))
        return jnp.stack([motion.sample(self.clip_arrays, t + k * self.dt)[0] for k in ks])

    # ------------------------------------------------------------------- reset / step
    def reset(self, rng, reward_config=None) -> State:
        """A new episode at a random clip time (RSI) or at 0, in the reference state."""
        rng, t, data = self._start(rng)
        return self._started(rng, t, self._forward_kinematics(data), reward_config)

    @staticmethod
    def _split_rng(rng):
        """(the env's next rng, the key of a new episode's clip time)."""
        return jax.random.split(rng)

    def _start(self, rng):
        """(rng, clip time, physics state without kinematics) of a new episode."""
        rng, key = self._split_rng(rng)
        if self.config.rsi:
            t = jax.random.uniform(key, (), minval=0.0, maxval=self.clip_arrays.duration)
        else:
            t = jnp.zeros(())
        qpos, qvel, low = motion.sample(self.clip_arrays, t)
        # fold_in, not another split: the clip time's key stays what it was without noise.
        noise = jax.random.normal(jax.random.fold_in(key, 1), qpos[7:].shape, qpos.dtype)
        qpos = qpos.at[7:].add(self.config.start_pose_noise * noise)
        # Some mocap frames put a body under the floor (see `mimic-mjx clips --check`):
        # start those episodes lifted by the depth, not inside the floor.
        qpos = qpos.at[2].add(jnp.maximum(0.0, -low))
        return rng, t, self.physics.put(qpos, qvel, self._pd_hold(qpos))

    def _started(self, rng, t, data, reward_config) -> State:
        """The State of a new episode from `_start`'s physics state with kinematics done."""
        obs = self._observe(data, t, self._future_qpos(t))
        zero = jnp.zeros(())
        config = self.reward_config if reward_config is None else reward_config
        sim = self.kinematics(data)
        errors = reward_lib.compute_errors(sim, sim, config.TERMS)
        _, terms = reward_lib.reward_from_errors(errors, jnp.zeros(self.action_size), config)
        return State(
            data=data,
            obs=obs,
            final_obs=obs,
            reward=zero,
            reward_terms=jax.tree.map(jnp.zeros_like, terms),
            termination={k: jnp.zeros((), bool) for k in TERMINATIONS},
            errors=errors,
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
            time=t,
            step_count=jnp.zeros((), jnp.int32),
            nonfinite_count=jnp.zeros((), jnp.int32),
            rng=rng,
            reward_config=config,
        )

    def _pd_hold(self, qpos):
        if self.config.control == "pd":
            return qpos[self._act_qpos]
        return jnp.zeros(self.action_size)

    def action_to_ctrl(self, action, ref_qpos):
        """[-1, 1] actions to actuator controls: a PD target (pd) or a torque fraction (torque).

        PD targets are offset + half_range * action, clipped to the joint's range; the offset
        is the range's middle or, with `action_offset: reference`, the reference pose
        `ref_qpos [nq]` the step moves toward, so that action 0 replays the clip.
        """
        action = jnp.clip(action, -1.0, 1.0)
        if self.config.control != "pd":
            return action
        if self.config.action_offset == "reference":
            return jnp.clip(ref_qpos[self._act_qpos] + self._act_half * action, self._lo, self._hi)
        return self._act_mid + self._act_half * action

    def reference_action(self, state: State):
        """The pd action whose targets are the reference pose one control step ahead [28]."""
        if self.config.action_offset == "reference":
            return jnp.zeros(self.action_size)
        qpos, _, _ = motion.sample(self.clip_arrays, state.time + self.dt)
        return jnp.clip((qpos[self._act_qpos] - self._act_mid) / self._act_half, -1.0, 1.0)

    def step(self, state: State, action) -> State:
        """Advance one 30 Hz control step; a finished episode is replaced by a fresh one.

        One environment; `batch.step_batch` steps a batch and builds only the resets it needs.
        """
        stepped = self.advance(state, action)
        fresh = self.reset(state.rng, state.reward_config)
        return select(stepped.done, keep_outcome(fresh, stepped), stepped)

    def advance(self, state: State, action) -> State:
        """One control step without the auto-reset: a finished episode is left finished
        (`done` set) for `step` or `batch.step_batch` to replace by `reset(state.rng)`."""
        if action.shape != (self.action_size,):
            raise MimicError(f"action has shape {action.shape}, expected ({self.action_size},) per environment")
        t = state.time + self.dt
        ref_qpos, ref_qvel, _ = motion.sample(self.clip_arrays, t)
        data, ref, diverged = self.physics.step_with_kinematics(
            state.data.replace(ctrl=self.action_to_ctrl(action, ref_qpos)), self.physics.put(ref_qpos, ref_qvel))
        finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)) & ~diverged
        errors = reward_lib.compute_errors(self.kinematics(data), self.kinematics(ref), state.reward_config.TERMS)
        steps = state.step_count + 1
        why = self._termination(data, finite, steps, t, ref_qpos, ref)
        terminated = jnp.any(jnp.stack([v for k, v in why.items() if not TERMINATIONS[k]]))
        truncated = ~terminated & jnp.any(jnp.stack([v for k, v in why.items() if TERMINATIONS[k]]))
        why = {k: (v & ~terminated) if TERMINATIONS[k] else v for k, v in why.items()}
        reward, terms = reward_lib.step_reward(errors, action, state.reward_config, terminated)
        obs = self._observe(data, t, self._future_qpos(t))
        obs = jnp.where(finite, obs, 0.0)  # never hand NaN/inf to the policy or the value
        errors = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), errors)
        return state.replace(
            data=data, obs=obs, time=t, step_count=steps,
            # The step's outcome: kept by the reset that replaces a finished episode.
            final_obs=obs, reward=reward, reward_terms=terms, termination=why, errors=errors,
            terminated=terminated, truncated=truncated,
            nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
            # What reset(state.rng) continues the stream with, so stepping on or resetting
            # leaves the same rng.
            rng=self._split_rng(state.rng)[0],
        )

    def _termination(self, data, finite, steps, t, ref_qpos, ref) -> dict:
        """Each reason in TERMINATIONS, [] bool, for a data and its reference `ref` with
        kinematics done."""
        fall_geom = jnp.asarray(self._fall_geom)
        # A fall from geometry, the same for both physics backends: a fall body's geom at or
        # below the floor plane (z = 0), where MuJoCo would report a contact at distance <= 0.
        touching = fall_geom & (self.physics.lowest_geom_z(data) <= 0.0)
        if self.config.fall_contact == "reference":
            # Geom by geom: the clip's body lies on the floor here too, so touching it is the motion.
            touching = touching & (self.physics.lowest_geom_z(ref) > self.config.fall_contact_clearance)
        touching = jnp.any(touching)
        early = self.config.early_termination
        # Without it a policy that walks well but off the reference's (curving) path keeps
        # scoring on every term but the COM's; ending the episode makes the path worth keeping.
        drift = jnp.linalg.norm(data.qpos[0:2] - ref_qpos[0:2])
        max_drift = self.config.max_root_drift
        body_error = jnp.max(jnp.linalg.norm(data.xpos[self._bodies] - ref.xpos[self._bodies], axis=-1))
        max_error = self.config.max_body_error
        why = {
            "fall_contact": finite & touching & early,
            "root_height": finite & (data.qpos[2] < self.config.min_root_height) & early,
            "root_drift": finite & (max_drift > 0) & (drift > max_drift) & early,
            "body_error": finite & (max_error > 0) & (body_error > max_error) & early,
            "nonfinite": ~finite,
            "time_limit": steps >= self.max_steps,
            "clip_end": (t >= self.clip_arrays.duration) & (not self.clip.loop),
        }
        return {k: jnp.asarray(v, bool) for k, v in why.items()}


# A step's outcome (what the policy's data and the metrics read); a reset keeps these.
OUTCOME_FIELDS = ("final_obs", "reward", "reward_terms", "termination", "errors", "terminated", "truncated",
                  "nonfinite_count")


def keep_outcome(fresh: State, stepped: State) -> State:
    return fresh.replace(**{k: getattr(stepped, k) for k in OUTCOME_FIELDS})


def select(mask, a, b):
    """`a` where `mask` else `b`, leaf by leaf; `mask` has the leaves' leading axes."""
    def pick(x, y):
        m = jnp.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim))
        return jnp.where(m, x, y)

    return jax.tree.map(pick, a, b)
