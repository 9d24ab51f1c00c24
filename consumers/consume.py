"""`recstream consume`: the learner as a service against Kafka and Redis."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.durability.policy import CheckpointPolicy, Checkpoints, LocalCheckpoints
from consumers.durability.rendezvous import WorkerCheckpoints
from consumers.health import Health, HealthPolicy
from consumers.http import serve
from consumers.ingest.kafka_source import KafkaEventSource
from consumers.learner import OnlineLearner, Totals
from consumers.metrics import LearnerMetrics
from consumers.model.factory import make_model
from consumers.preflight import check_consume
from consumers.publisher import Publisher
from consumers.service import ConsumeService, StopFlag
from consumers.settings import ConsumeSettings
from consumers.sinks.base import StoreUnavailable
from consumers.sinks.lease import OwnerConflict, OwnerLease
from consumers.sinks.redis import RedisStore
from consumers.workers import Worker, run_workers
from streamer.events import encode_key
from streamer.preflight import PreflightError
from streamer.settings import kafka_client_options

log = logging.getLogger("recstream.consume")


def run_consume(settings: ConsumeSettings) -> int:
    """One learner, or a supervisor of `--workers N` sharing their tables; either holds
    the prefix's owner lease (one model per prefix) from before it learns until it stops.
    Returns 2 when a service refuses the credentials or the settings cannot work, 1 when
    another model owns the prefix (one line on stderr each)."""
    # From the first moment: a SIGTERM during the checks or the claim stops the start
    # cleanly (the lease released), not by the default action.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        check_consume(settings)
    except PreflightError as error:
        print(f"recstream consume: {error}", file=sys.stderr)
        return 2
    store = _store(settings)
    lease = OwnerLease(store, settings.owner_lease_s)
    try:
        lease.claim()
    except (OwnerConflict, StoreUnavailable) as error:
        print(f"recstream consume: {error}", file=sys.stderr)
        store.close()
        return 1
    try:
        # A lost lease stops the process as SIGTERM does: learn, publish, checkpoint, exit.
        with lease.kept(on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM)):
            status = _run(settings, stop)
    finally:
        store.close()
    return 1 if lease.lost else status


def _run(settings: ConsumeSettings, stop: threading.Event) -> int:
    if settings.workers > 1:
        return run_workers(settings, run_worker, stop)
    run_process(settings, stop)
    return 0


def _store(settings: ConsumeSettings) -> RedisStore:
    return RedisStore.from_url(
        settings.redis,
        settings.prefix,
        settings.redis_options,
        settings.redis_password,
        settings.allow_plaintext_secrets,
    )


def run_worker(settings: ConsumeSettings, worker: Worker) -> None:
    """Worker `worker.index` of a host: the entry point each spawned process runs."""
    run_process(settings, worker.stop_flag(), worker)


def missing_topic_is_a_warning(record: logging.LogRecord) -> bool:
    """kafka-python logs a subscribed topic that does not exist yet (the users topic on a
    fresh broker) as an ERROR; the learner reads it once it exists, so it is a warning."""
    if "not found in cluster metadata" in record.getMessage():
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def run_process(settings: ConsumeSettings, stop: StopFlag, worker: Worker | None = None) -> None:
    """One consuming process, alone or as a host's `worker`: consume until `stop` is set,
    then learn what is held, publish, checkpoint, commit."""
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack
    name = "recstream.consume" if worker is None else f"recstream.worker-{worker.index}"
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {name} %(name)s %(message)s"
    )
    logging.getLogger("kafka.cluster").addFilter(missing_topic_is_a_warning)
    settings.pin_threads()
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    health = Health(
        HealthPolicy(
            max_checkpoint_age_s=None
            if settings.checkpoint_dir is None or settings.checkpoint_every_seconds is None
            else 3 * settings.checkpoint_every_seconds + 60
        )
    )
    port = settings.metrics_port + worker.index if worker and settings.metrics_port else 0
    server = serve(settings.metrics_addr, port or settings.metrics_port, registry, health)
    source = KafkaEventSource(
        settings.bootstrap,
        settings.topics(),
        settings.group,
        settings.auto_offset_reset,
        kafka_client_options(settings.kafka_options, settings.kafka_password),
        worker=None if worker is None else (worker.index, worker.count),
    )
    store = _store(settings)
    config, search = settings.hyper_parameters(), settings.search()
    learner = (
        OnlineLearner(make_model(settings.model, config, search=search))
        if worker is None
        else OnlineLearner(
            make_model(settings.model, config, worker.storage, search),
            popularity=worker.popularity(),
            totals=Totals((worker.totals(), worker.sync.lock)),
        )
    )
    publisher = Publisher(
        learner,
        store,
        owns=None if worker is None else lambda user: source.owns(encode_key(user)),
        **settings.publishing(),
    )
    if worker is not None:
        worker.mapped()
    service = ConsumeService(
        source,
        learner,
        publisher,
        metrics,
        batch_size=settings.batch_size,
        max_wait_s=settings.max_wait_s,
        checkpoints=_checkpoints(settings, worker),
        users_topic=settings.users_topic,
        items_topic=settings.items_topic,
        health=health,
    )
    log.info(
        "consuming %s as group %s; metrics and health on %s:%d; %s",
        settings.topic,
        settings.group,
        settings.metrics_addr,
        server.server_port,
        f"checkpoints in {settings.checkpoint_dir}"
        if settings.checkpoint_dir
        else "checkpoints off: no offset is committed, a restart learns the log again",
    )
    try:
        service.run(stop)
    finally:
        source.close()
        store.close()
        server.shutdown()
        log.info("stopped after %d events", service.learner.events)
        sys.stderr.flush()


def _checkpoints(settings: ConsumeSettings, worker: Worker | None) -> Checkpoints | None:
    if settings.checkpoint_dir is None:
        return None
    policy = CheckpointPolicy(
        Path(settings.checkpoint_dir),
        settings.checkpoint_every_events,
        settings.checkpoint_every_seconds,
        settings.checkpoint_keep,
    )
    if worker is None:
        return LocalCheckpoints(policy, settings.topic)
    return WorkerCheckpoints(policy, worker, settings.topic)
