"""The tf.distribute strategy training runs under (`train.distribute`), and which process is the chief.

- "none": TensorFlow's default strategy, one replica in this process.
- "mirrored": `tf.distribute.MirroredStrategy` over this machine's GPUs; on a machine
  without GPUs, over its logical CPU devices when more than one is configured
  (`tf.config.set_logical_device_configuration`), else one replica on the CPU.
- "multi_worker": `tf.distribute.MultiWorkerMirroredStrategy`, the cluster read from
  the TF_CONFIG environment variable, as TensorFlow's docs and Kubernetes operators set it.

The batch size in the config is the batch of one replica; the pipeline is batched
with the global batch, `train.batch_size` x replicas, which tf.distribute splits
evenly between them. The learning rate is not scaled with the number of replicas:
the default optimizer (Adam) adapts its step to the gradient's size, and the linear
scaling rule is a rule for SGD that also needs a warm-up, so catsdogs keeps the
configured rate and logs the global batch; docs/scaling.md says how to
scale it by hand.

MultiWorkerMirroredStrategy configures TensorFlow's collective ops, which only works
before TensorFlow runs its first operation, so `build_distribution` is called before
anything else in training. When a worker dies, the others block in their next
all-reduce; TensorFlow's peer health check notices the dead peer within about
`PEER_CHECK_INTERVAL_SECONDS` and aborts the collectives with an UnavailableError,
which training turns into a `WorkerLostError`.
"""

import dataclasses
import json
import logging
import os

import tensorflow as tf

from catsdogs.choices import DISTRIBUTE_STRATEGIES
from catsdogs.errors import CatsdogsError

logger = logging.getLogger("catsdogs.training")

TF_CONFIG_VARIABLE = "TF_CONFIG"
# How often each worker checks that its peers are alive (TensorFlow's default is 30 s).
PEER_CHECK_INTERVAL_SECONDS = 5
# The job types catsdogs runs: every worker trains; a "chief" job, if present, is the chief.
SUPPORTED_JOBS = ("chief", "worker")
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


class WorkerLostError(CatsdogsError):
    """A peer of a multi-worker run stopped answering, so the collectives of this worker were aborted."""


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The strategy training runs under, and this process's place in it.

    Attributes:
        name: "none", "mirrored" or "multi_worker".
        strategy: the `tf.distribute.Strategy`.
        workers: processes taking part (1 unless multi_worker).
        worker_index: this process's position in the cluster (the chief is 0).
        is_chief: whether this process writes the run folder, evaluates and reports.
    """

    name: str
    strategy: tf.distribute.Strategy
    workers: int = 1
    worker_index: int = 0
    is_chief: bool = True

    @property
    def replicas(self) -> int:
        """Model replicas in sync across all workers: each takes one slice of every global batch."""
        return self.strategy.num_replicas_in_sync

    def global_batch_size(self, per_replica_batch_size: int) -> int:
        """Return the batch the pipeline must produce: the per-replica batch times the replicas."""
        return per_replica_batch_size * self.replicas

    def describe(self) -> str:
        """One line for the log: strategy, replicas, workers and this process's role."""
        role = "chief" if self.is_chief else f"worker {self.worker_index}"
        return f"{self.name}: {self.replicas} replica(s) on {self.workers} worker(s), this process is the {role}"


def build_distribution(name: str, *, environ=None) -> Distribution:
    """Build the strategy `train.distribute` names.

    Args:
        name: "none", "mirrored" or "multi_worker".
        environ: the environment to read TF_CONFIG from; default `os.environ`.

    Returns:
        A `Distribution`.

    Raises:
        CatsdogsError: for an unknown name, or a missing or invalid TF_CONFIG under "multi_worker".
    """
    if name == "none":
        return Distribution(name=name, strategy=tf.distribute.get_strategy())
    if name == "mirrored":
        return Distribution(name=name, strategy=tf.distribute.MirroredStrategy(devices=local_devices()))
    if name == "multi_worker":
        tf_config = read_tf_config(os.environ if environ is None else environ)
        strategy = _multi_worker_strategy()
        workers, worker_index = worker_position(tf_config)
        return Distribution(
            name=name,
            strategy=strategy,
            workers=workers,
            worker_index=worker_index,
            is_chief=is_chief(tf_config),
        )
    raise CatsdogsError(
        f"Unknown distribution strategy. Choose one of {', '.join(DISTRIBUTE_STRATEGIES)} (train.distribute). "
        f"Received: train.distribute={name!r}"
    )


def check_distribution_supported(name: str, *, model_name: str, pretrained: bool) -> None:
    """Refuse to distribute a transfer model's training, before anything is built.

    Raises:
        CatsdogsError: for a pretrained (transfer) model with `train.distribute` other than "none".
    """
    if name != "none" and pretrained:
        raise CatsdogsError(
            "train.distribute is for models trained from scratch (seed_cnn, seed_cnn_bn, xception_mini). A "
            "pretrained model trains its head on features cached once by ONNX Runtime, in seconds on one machine, "
            "outside tf.distribute. Use --set train.distribute=none, or a from-scratch model. "
            f"Received: train.distribute={name}, model.name={model_name}"
        )


def local_devices() -> list[str]:
    """Return the devices MirroredStrategy mirrors over: every GPU, else every logical CPU device."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [device.name for device in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) == 1:
        logger.warning(
            "train.distribute=mirrored found no GPU and one CPU device, so it trains one replica, as "
            "train.distribute=none would. Configure more devices with tf.config.set_logical_device_configuration "
            "before TensorFlow starts, or use a machine with GPUs."
        )
    return [device.name for device in cpus]


def _multi_worker_strategy() -> tf.distribute.Strategy:
    """Build MultiWorkerMirroredStrategy with a peer health check every `PEER_CHECK_INTERVAL_SECONDS`."""
    from tensorflow.python.distribute import collective_all_reduce_strategy

    # TensorFlow's own multi-worker tests shorten the check this way; the thread that runs it starts in the
    # constructor and reads the interval from the instance before every pause.
    extended_class = collective_all_reduce_strategy.CollectiveAllReduceExtended
    default_interval = extended_class._check_health_interval
    extended_class._check_health_interval = PEER_CHECK_INTERVAL_SECONDS
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        strategy.extended._check_health_interval = PEER_CHECK_INTERVAL_SECONDS
    except RuntimeError as error:
        raise CatsdogsError(
            "MultiWorkerMirroredStrategy must be created before TensorFlow runs anything else in this process. "
            "Run training in a fresh process (the `catsdogs train` command does). "
            f"Received: error={error}"
        ) from error
    finally:
        extended_class._check_health_interval = default_interval
    return strategy


def read_tf_config(environ) -> dict:
    """Read and check the TF_CONFIG environment variable of a multi-worker run.

    Args:
        environ: a mapping of environment variables.

    Returns:
        The parsed TF_CONFIG: {"cluster": {job: ["host:port", ...]}, "task": {"type": job, "index": i}}.

    Raises:
        CatsdogsError: when TF_CONFIG is missing, not JSON, or does not describe this task in its cluster.
    """
    text = environ.get(TF_CONFIG_VARIABLE)
    if not text:
        raise CatsdogsError(
            "train.distribute=multi_worker reads the cluster from the TF_CONFIG environment variable, which is not "
            f"set. Set it in every worker's environment, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index 1 on the "
            "second host), or use --set train.distribute=none or mirrored on one machine. Received: TF_CONFIG unset"
        )
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise CatsdogsError(
            f"TF_CONFIG is not valid JSON ({error}). Expected e.g. {TF_CONFIG_EXAMPLE}. Received: TF_CONFIG={text!r}"
        ) from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise CatsdogsError(
            f'TF_CONFIG needs a "cluster" object and a "task" object. Expected e.g. {TF_CONFIG_EXAMPLE}. '
            f"Received: TF_CONFIG={text!r}"
        )
    unsupported = sorted(set(cluster) - set(SUPPORTED_JOBS))
    addresses = [address for job in SUPPORTED_JOBS for address in cluster.get(job, [])]
    if unsupported or not addresses or not all(_is_address(address) for address in addresses):
        raise CatsdogsError(
            f'TF_CONFIG\'s "cluster" must list "host:port" addresses under "worker" (and at most one "chief"); '
            f"parameter servers and evaluators are not used by catsdogs. Expected e.g. {TF_CONFIG_EXAMPLE}. "
            f"Received: cluster={cluster}"
        )
    task_type, task_index = task.get("type"), task.get("index")
    if (
        task_type not in cluster
        or not isinstance(task_index, int)
        or isinstance(task_index, bool)
        or not 0 <= task_index < len(cluster[task_type])
    ):
        raise CatsdogsError(
            f'TF_CONFIG\'s "task" must name this process: a job type of the cluster and an index into its list. '
            f"Expected e.g. {TF_CONFIG_EXAMPLE}. Received: task={task}, cluster jobs={sorted(cluster)}"
        )
    return tf_config


def _is_address(address) -> bool:
    host, _, port = str(address).rpartition(":")
    return bool(host) and port.isdigit()


def worker_position(tf_config: dict) -> tuple[int, int]:
    """Return (workers, index of this process) in the order TensorFlow numbers tasks: the chief first."""
    cluster, task = tf_config["cluster"], tf_config["task"]
    ordered = [(job, index) for job in SUPPORTED_JOBS for index in range(len(cluster.get(job, [])))]
    return len(ordered), ordered.index((task["type"], task["index"]))


def is_chief(tf_config: dict | None = None) -> bool:
    """Whether this process is the chief: the "chief" task, or worker 0 in a cluster without one.

    Args:
        tf_config: a parsed TF_CONFIG, or None for a single process (always the chief).
    """
    if not tf_config:
        return True
    task_type, task_index = tf_config["task"]["type"], tf_config["task"]["index"]
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in tf_config["cluster"]


def chief_values(strategy: tf.distribute.Strategy, sources: list) -> list[tf.Tensor]:
    """Return the chief's value of every source on every worker, as float64 tensors.

    Replica 0 lives on the chief. Every replica contributes its value times (its replica id == 0)
    to a SUM all-reduce, so every worker receives the chief's value exactly (adding zeros rounds
    nothing; integers up to 2**53 survive float64). A collective: every worker must call it, in
    the same order, with sources of the same shapes.

    Args:
        strategy: the strategy whose replicas take part.
        sources: Keras or TensorFlow variables, or lists of numbers, read on each replica.
    """

    def replica_function():
        context = tf.distribute.get_replica_context()
        keep = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float64)
        tensors = [
            tf.constant(source, tf.float64)
            if isinstance(source, (list, tuple))
            else tf.cast(tf.convert_to_tensor(source), tf.float64)
            for source in sources
        ]
        return [context.all_reduce("SUM", tensor * keep) for tensor in tensors]

    results = tf.function(lambda: strategy.run(replica_function))()
    return [strategy.experimental_local_results(result)[0] for result in results]


def agree_on_flag(distribution: Distribution, value: bool) -> bool:
    """Return the chief's `value` on every worker of a multi-worker run (a collective), or `value` itself."""
    if distribution.name != "multi_worker":
        return value
    return bool(chief_values(distribution.strategy, [[float(value)]])[0].numpy()[0])
