"""The lifecycle plumbing the model nodes (perception, intent, controller) share.

A :class:`ModelNode` is an ``rclpy.lifecycle.LifecycleNode`` whose subclass implements four
plain hooks: ``configure()`` (validate parameters, load weights, create entities) and
``activate()`` return ``None`` on success or a reason string for a refusal (the transition
returns FAILURE and the reason is logged); ``deactivate()`` stops publishing / commanding and
``release()`` frees everything ``configure`` made. Both must be safe to call in any state:
they also run on shutdown, after a refused configure and in error processing.

rclpy (Kilted) has no public accessor for a node's current state, so each transition records
the primary state it reached in ``lifecycle_state``. An exception in a hook is logged with
its traceback (rclpy would swallow it) and returns ERROR; error processing deactivates and
releases, and the node ends 'unconfigured'.

With ``autostart`` the subclass calls :meth:`autostart` at the end of its constructor: a
failure is logged and kept in ``startup_error`` (never raised, so a component container
survives it); ``common.run_node`` then exits the process with status 1.
"""
import dataclasses
import gc
import traceback

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from dial_ros.codecs import LATENT_DTYPES
from dial_ros.nodes import common
from dial_ros.schema import setting

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR


@dataclasses.dataclass
class ModelParams:
    """The model settings of perception and intent (one schema; each node adds its own)."""

    autostart: bool = setting(True, 'configure and activate at start-up (no lifecycle '
                              'manager needed)', read_only=True)
    checkpoint: str = setting('', "model checkpoint folder; '' = the bundled one, 'untrained' "
                              '= an untrained tiny model (applies at the next configure)')
    embodiment: str = setting('gr1_sim', 'embodiment config name (next configure)')
    seed: int = setting(0, 'seed of the untrained model (next configure)', low=0,
                        high=2**31 - 1)
    device: str = setting('cpu', 'torch device (next configure)', choices=('cpu', 'cuda'))
    torch_threads: int = setting(1, 'torch CPU threads (next configure)', low=1, high=64)
    latent_dtype: str = setting('float32', 'element type of published latents (live); '
                                'float16/bfloat16 halve the message, receivers convert',
                                choices=LATENT_DTYPES)


class ModelNode(LifecycleNode):
    """A lifecycle node with hooks, a readable state and autostart; see the module docstring."""

    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.lifecycle_state = 'unconfigured'
        self.startup_error = ''

    # --- hooks (override) ------------------------------------------------------------------
    def configure(self):
        """Load and create; return None, or why the node cannot be configured."""

    def activate(self):
        """Start publishing; return None, or why the node cannot be activated."""

    def deactivate(self):
        """Stop publishing (safe in any state)."""

    def release(self):
        """Free what configure created (safe in any state)."""

    def load_part(self, part):
        """configure's first step: check ``self.params`` and load ``part`` of the model into
        ``self.policy`` / ``self.model_id``; return None, or why it cannot be loaded."""
        p = self.params
        try:
            if hasattr(p, 'check'):
                p.check()
            self.policy, self.model_id = common.load_policy(
                p.checkpoint, p.embodiment, p.seed, getattr(p, 'device', 'cpu'),
                getattr(p, 'torch_threads', 1), part=part)
        except (RuntimeError, ValueError) as err:
            return str(err)
        return None

    # --- start-up and shutdown -------------------------------------------------------------
    def autostart(self):
        """Configure and activate now; on failure log, keep ``startup_error``, return False."""
        for name, step in (('configure', self.trigger_configure),
                           ('activate', self.trigger_activate)):
            if step() != SUCCESS:
                self.startup_error = (f'{self.get_name()}: autostart failed in {name} (see the '
                                      f'error above); now {self.lifecycle_state}')
                self.get_logger().error(self.startup_error)
                return False
        return True

    def close(self):
        """Shut down through the lifecycle (called by common.run_node before destroy_node).

        After Ctrl-C the context is already shut down: rcl then moves the state machine to
        'shuttingdown' but fails to publish the transition event, and rclpy never calls
        on_shutdown. So the transition is used only while the context is up, and whatever
        happens, the node ends deactivated and released (no command thread left ticking).
        """
        if self.lifecycle_state == 'finalized':
            return
        if self.context.ok():
            try:
                self.trigger_shutdown()
            except Exception as err:  # noqa: BLE001 - e.g. mid-transition; free regardless
                self.get_logger().warning(f'shutdown transition failed ({err}); releasing')
        if self.lifecycle_state != 'finalized':
            self._stop_all()
            self.lifecycle_state = 'finalized'

    # --- rclpy's transition callbacks ------------------------------------------------------
    def on_configure(self, state):
        result = self._run('configure', self.configure, 'inactive')
        if result != SUCCESS:
            self.release()  # a refused configure leaves nothing half-made
        return result

    def on_activate(self, state):
        LifecycleNode.on_activate(self, state)  # enable the lifecycle publishers first
        # torch, transformers and rclpy leave ~370 k long-lived objects: a full cyclic
        # collection walks them all for 100-160 ms (measured here) holding the GIL, which
        # stalls every other thread (the 1 kHz command stream). Move them out of the
        # collector's view; refcounting still frees them when released.
        gc.collect()
        gc.freeze()
        result = self._run('activate', self.activate, 'active')
        if result != SUCCESS:
            LifecycleNode.on_deactivate(self, state)
        return result

    def on_deactivate(self, state):
        result = self._run('deactivate', self.deactivate, 'inactive')
        LifecycleNode.on_deactivate(self, state)  # after the hook: it may send a last message
        return result

    def on_cleanup(self, state):
        return self._run('cleanup', self.release, 'unconfigured')

    def on_shutdown(self, state):
        return self._run('shutdown', self._stop_all, 'finalized')

    def on_error(self, state):
        self.get_logger().error(f'error processing (from {state.label}): deactivating and '
                                'releasing')
        return self._run('error processing', self._stop_all, 'unconfigured')

    def _stop_all(self):
        self.deactivate()
        self.release()

    def _run(self, name, hook, reached):
        try:
            reason = hook()
        except Exception:  # noqa: BLE001 - rclpy turns it into a silent ERROR
            self.get_logger().error(f'{name} raised:\n{traceback.format_exc()}')
            if name == 'error processing':
                self.lifecycle_state = 'finalized'
            return ERROR
        if isinstance(reason, str) and reason:
            self.get_logger().error(f'{name} failed: {reason}')
            return FAILURE
        self.lifecycle_state = reached
        return SUCCESS


def free_memory(device):
    """After dropping a model's last reference: collect it and return CUDA memory."""
    gc.unfreeze()  # on_activate froze the model's objects; let the collector see them again
    gc.collect()
    if device is not None and getattr(device, 'type', '') == 'cuda':
        import torch
        torch.cuda.empty_cache()


def change_state_request(transition):
    """A lifecycle_msgs ChangeState request for 'activate' or 'deactivate' (by name)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    ids = {'activate': Transition.TRANSITION_ACTIVATE,
           'deactivate': Transition.TRANSITION_DEACTIVATE}
    return ChangeState.Request(transition=Transition(id=ids[transition]))
