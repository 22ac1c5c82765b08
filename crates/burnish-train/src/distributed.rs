//! Data-parallel training on burn's collective (`burn::collective`, crate burn-collective).
//!
//! Every peer holds a replica of the model and its own copy of the optimizer state, all
//! starting identical (clones of one loaded model and one resumed optimizer). Each step every
//! peer draws the whole global step from the same seeded [`crate::data_order::DataCursor`] and
//! keeps its own whole micro-batches; after its local accumulation the gradients are summed
//! over the peers with burn's `all_reduce` (in module order, bucketed), so every peer clips and
//! steps the same gradient and the replicas stay identical. Whole micro-batches, weighted by
//! the global step's example count, make `n` peers of accumulation `g` equal one peer of
//! accumulation `n·g` up to summation order.
//!
//! Before the gradients, one small status all-reduce carries the step's loss, tokens and
//! metrics, which parameters have a gradient anywhere, and every peer's failure flags: a NaN or
//! an error on one peer stops all of them at the same step with the same error. A peer that
//! panics or fails between collectives is caught by the supervising thread, which resets the
//! collective so the others return; a watchdog turns a collective call that waits longer than
//! `distributed.timeout_secs` (a dead node) into an error.
//!
//! Peers in one process share burn's per-backend collective server, so one data-parallel run
//! at a time runs in a process (later ones wait). Across machines, node 0 runs burn's
//! orchestrator ([`spawn_coordinator`]) and every node's peers reduce over WebSocket.

use std::cell::RefCell;
use std::net::UdpSocket;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use burn::collective::{
    self, AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation,
};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_communication::Address;
use burnish_model::CausalLm;

use crate::config::{DistributedConfig, TrainingConfig};
use crate::trainer::{
    GradientExchange, MetricSums, Objective, PeerFailure, RunOptions, StepSums, TrainError,
    TrainOutcome, run_peer, start_run,
};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Gradient elements per all-reduce call (64 MiB of f32): few calls per step, as PyTorch
/// DDP's buckets, without doubling the memory of a large model's gradients at once.
const BUCKET_ELEMENTS: usize = 1 << 24;

/// Bytes of new metric names one peer can announce in one step.
const NAME_BYTES: usize = 4096;

/// Status slots before the per-peer flags: loss, tokens, non-finite count, non-finite value,
/// peers with new metric names.
const HEAD: usize = 5;

/// One data-parallel run at a time per process: burn keeps one collective server per backend.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Trains on every peer of `config.distributed` (this process's `devices`; the other nodes run
/// the same call) and returns rank 0's model (on other nodes, the local first peer's, which is
/// identical).
///
/// Peers on a CPU share `device`; on a GPU backend peer `i` runs on device index
/// `device_ids[i]` (default `i`) of `device`'s kind.
pub fn train_parallel<B: AutodiffBackend, O: Objective<B> + Sync>(
    model: CausalLm<B>,
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<TrainOutcome<B>, TrainError> {
    let dist = &config.distributed;
    let _serial = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let devices = dist.peer_devices::<B>(device);
    let collective_config = collective_config(dist)?;
    let (model, optimizer, start) = start_run(model, objective, config, options, device)?;
    let watch = Watch::new(devices.len(), Duration::from_secs(dist.timeout_secs));
    // Forgets peers a failed earlier run in this process left registered.
    reset_collective::<Inner<B>>();
    let (tx, rx) = mpsc::channel::<bool>();
    let results = std::thread::scope(|scope| {
        let watchdog = scope.spawn(|| watch.guard::<Inner<B>>());
        let peers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(slot, peer_device)| {
                let link = PeerLink::<B> {
                    rank: dist.first_rank() + slot,
                    world: dist.world_size(),
                    slot,
                    device: peer_device.clone(),
                    watch: &watch,
                    state: RefCell::default(),
                };
                let model = model.clone().fork(peer_device);
                let (optimizer, start) = (optimizer.clone(), start.clone());
                let collective_config = collective_config.clone();
                let report = Report {
                    tx: tx.clone(),
                    ok: false,
                };
                scope.spawn(move || {
                    let mut report = report;
                    let result = link.register(collective_config).and_then(|()| {
                        let outcome = run_peer(
                            model,
                            optimizer,
                            objective,
                            config,
                            options,
                            start,
                            Some(&link),
                        )?;
                        link.finish()?;
                        Ok(outcome)
                    });
                    report.ok = result.is_ok();
                    result
                })
            })
            .collect();
        drop(tx);
        // The first failure releases the peers that wait for the failed one in a collective.
        // Stops the watchdog below, or on the way out of a panic.
        let stop = StopOnDrop(&watch);
        let mut reset = false;
        for ok in rx.iter() {
            if !ok && !reset {
                reset_collective::<Inner<B>>();
                reset = true;
            }
        }
        drop(stop);
        let results: Vec<_> = peers.into_iter().map(|p| p.join()).collect();
        let _ = watchdog.join();
        results
    });
    first_cause(results)
}

/// The run's result: rank 0's outcome, or the error that caused the others.
fn first_cause<T>(
    results: Vec<std::thread::Result<Result<T, TrainError>>>,
) -> Result<T, TrainError> {
    let mut outcome = None;
    let (mut cause, mut panic, mut stopped) = (None, None, None);
    for (slot, result) in results.into_iter().enumerate() {
        match result {
            Ok(Ok(o)) => {
                if outcome.is_none() {
                    outcome = Some(o);
                }
            }
            Ok(Err(e @ TrainError::PeerStopped(_))) => {
                stopped.get_or_insert(e);
            }
            Ok(Err(e)) => {
                cause.get_or_insert(e);
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                panic.get_or_insert(TrainError::Other(format!(
                    "data-parallel peer {slot} of this process panicked: {message}"
                )));
            }
        }
    }
    match (cause.or(panic).or(stopped), outcome) {
        (Some(e), _) => Err(e),
        (None, Some(o)) => Ok(o),
        (None, None) => Err(TrainError::Other("no data-parallel peer ran".into())),
    }
}

/// Releases every peer waiting in a collective call (they return an error). When burn's
/// collective server has died (its task panicked on a network failure) there is nothing to
/// release and burn's reset panics; the peers already got their error then.
fn reset_collective<I: Backend>() {
    let _ = std::panic::catch_unwind(collective::reset_collective::<I>);
}

/// Stops the watchdog when the supervisor leaves, even by a panic.
struct StopOnDrop<'a>(&'a Watch);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Tells the supervisor that a peer ended, and whether it succeeded; sent on drop, so a
/// panicking peer reports too.
struct Report {
    tx: mpsc::Sender<bool>,
    ok: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        let _ = self.tx.send(self.ok);
    }
}

/// burn's collective configuration for `dist`: local peers, plus the global (multi-node)
/// parameters when there is more than one node.
fn collective_config(dist: &DistributedConfig) -> Result<CollectiveConfig, TrainError> {
    let config = CollectiveConfig::default().with_num_devices(dist.devices);
    if dist.nodes == 1 {
        return Ok(config);
    }
    let invalid = |m: String| TrainError::Other(format!("distributed.coordinator: {m}"));
    let (coordinator, port) = coordinator_address(dist)?;
    let data_port = match dist.data_port {
        Some(p) => p,
        None => u16::try_from(port as u32 + 1 + dist.node_rank).map_err(|_| {
            invalid(format!(
                "port {port} leaves no room for the data ports; set distributed.data_port"
            ))
        })?,
    };
    let host = match &dist.node_host {
        Some(host) => host.clone(),
        None => local_address_toward(coordinator)?,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    // burn reads a bare host:port as no address at all, so the scheme is always spelled out.
    let address = |a: String| Address::from_str(&a).map_err(invalid);
    Ok(config
        .with_num_nodes(dist.nodes)
        .with_global_address(address(format!("ws://{coordinator}"))?)
        .with_node_address(address(format!("ws://{host}:{data_port}"))?)
        .with_data_service_port(data_port)
        // The tree reports a lost node as an error; the ring panics on it.
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2)))
}

/// The coordinator's `host:port` (without a `ws://` a user may have written) and its port.
fn coordinator_address(dist: &DistributedConfig) -> Result<(&str, u16), TrainError> {
    let invalid = |m: String| TrainError::Other(format!("distributed.coordinator: {m}"));
    let coordinator = dist
        .coordinator
        .as_deref()
        .ok_or_else(|| invalid("is needed with more than one node".into()))?;
    let coordinator = coordinator.strip_prefix("ws://").unwrap_or(coordinator);
    let port: u16 = coordinator
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| invalid(format!("`{coordinator}` is not host:port")))?;
    Ok((coordinator, port))
}

/// The address this machine uses to reach `coordinator` (no packet is sent).
fn local_address_toward(coordinator: &str) -> Result<String, TrainError> {
    let socket = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(coordinator).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            TrainError::Other(format!(
                "cannot find this machine's address toward the coordinator {coordinator}: {e}; set distributed.node_host"
            ))
        })?;
    Ok(socket.ip().to_string())
}

/// On node 0 of a multi-node run, starts burn's orchestrator (the coordinator) on the port of
/// `distributed.coordinator`, on all interfaces, on a thread of its own; elsewhere does
/// nothing. It serves until the process ends. It takes over Ctrl-C, so the caller should end
/// the process when the returned thread ends.
pub fn spawn_coordinator(
    dist: &DistributedConfig,
) -> Result<Option<std::thread::JoinHandle<()>>, TrainError> {
    if dist.nodes < 2 || !dist.is_main_node() {
        return Ok(None);
    }
    let (_, port) = coordinator_address(dist)?;
    // burn's server panics on its own thread when the port is taken; this says it here.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        TrainError::Other(format!("the coordinator cannot listen on port {port}: {e}"))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| TrainError::Other(format!("cannot start the coordinator's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("burnish-coordinator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map(Some)
        .map_err(|e| TrainError::Other(format!("cannot start the coordinator: {e}")))
}

/// When each peer entered the collective call it is in, so that a call waiting on a dead peer
/// becomes an error instead of a hang.
struct Watch {
    origin: Instant,
    /// Milliseconds since `origin` plus one when the peer entered its current call; 0 outside.
    entered: Vec<AtomicU64>,
    registering: Vec<AtomicBool>,
    timeout: Duration,
    fired: AtomicBool,
    done: AtomicBool,
}

impl Watch {
    fn new(peers: usize, timeout: Duration) -> Self {
        Watch {
            origin: Instant::now(),
            entered: (0..peers).map(|_| AtomicU64::new(0)).collect(),
            registering: (0..peers).map(|_| AtomicBool::new(false)).collect(),
            timeout,
            fired: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn call<T>(&self, slot: usize, registering: bool, f: impl FnOnce() -> T) -> T {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        self.registering[slot].store(registering, Ordering::SeqCst);
        self.entered[slot].store(now, Ordering::SeqCst);
        let out = f();
        self.entered[slot].store(0, Ordering::SeqCst);
        self.registering[slot].store(false, Ordering::SeqCst);
        out
    }

    fn stuck(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let limit = self.timeout.as_millis() as u64;
        self.entered.iter().any(|e| {
            let at = e.load(Ordering::SeqCst);
            at > 0 && now.saturating_sub(at) > limit
        })
    }

    fn stop(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The watchdog: on a call past the timeout, resets the collective (the waiting peers then
    /// return an error). A peer waiting in registration is not released by a reset (burn keeps
    /// its callback), so then the process ends with the message: nothing else can free it.
    fn guard<I: Backend>(&self) {
        let poll = (self.timeout / 4).min(Duration::from_millis(200));
        while !self.done.load(Ordering::SeqCst) {
            std::thread::sleep(poll);
            if !self.stuck() {
                continue;
            }
            self.fired.store(true, Ordering::SeqCst);
            reset_collective::<I>();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !self.done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !self.done.load(Ordering::SeqCst)
                && self.registering.iter().any(|r| r.load(Ordering::SeqCst))
            {
                eprintln!(
                    "error: the data-parallel peers did not all register within {} s (distributed.timeout_secs): a node did not start, or cannot reach the coordinator or the others",
                    self.timeout.as_secs()
                );
                std::process::exit(2);
            }
            return;
        }
    }
}

/// What a peer remembers between collectives.
#[derive(Default)]
struct LinkState {
    /// Metric names every peer knows, in the order their sums travel.
    names: Vec<String>,
    /// Which trainable parameters (in module order) have a gradient on some peer this step.
    present: Vec<bool>,
}

/// One peer's side of the collective.
struct PeerLink<'a, B: AutodiffBackend> {
    rank: usize,
    world: usize,
    slot: usize,
    device: B::Device,
    watch: &'a Watch,
    state: RefCell<LinkState>,
}

impl<B: AutodiffBackend> PeerLink<'_, B> {
    /// burn's name for this peer: its global rank, unique over all nodes.
    fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// Runs one call into burn's collective. burn panics (in its server task, then in the
    /// caller) on some network failures instead of returning an error; that becomes this peer's
    /// error too.
    fn call<T>(
        &self,
        registering: bool,
        during: &str,
        f: impl FnOnce() -> Result<T, CollectiveError>,
    ) -> Result<T, TrainError> {
        let outcome = self.watch.call(self.slot, registering, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        });
        match outcome {
            Ok(result) => result.map_err(|e| self.error(e, during)),
            Err(panic) => Err(TrainError::PeerStopped(format!(
                "peer {} of {}: burn's collective failed during {during} ({}): a node died or the network failed",
                self.rank,
                self.world,
                panic_message(&*panic)
            ))),
        }
    }

    fn register(&self, config: CollectiveConfig) -> Result<(), TrainError> {
        self.call(true, "registration", || {
            collective::register::<Inner<B>>(self.id(), self.device.clone(), config)
        })
    }

    fn finish(&self) -> Result<(), TrainError> {
        self.call(false, "the end", || {
            collective::finish_collective::<Inner<B>>(self.id())
        })
    }

    fn error(&self, error: CollectiveError, during: &str) -> TrainError {
        let (rank, world) = (self.rank, self.world);
        if self.watch.fired.load(Ordering::SeqCst) {
            return TrainError::PeerStopped(format!(
                "peer {rank} of {world} waited more than {} s (distributed.timeout_secs) in the collective during {during}: a peer or node died or hangs; raise the timeout if rank 0's evaluations or checkpoints take longer",
                self.watch.timeout.as_secs()
            ));
        }
        match error {
            CollectiveError::LocalServerMissing | CollectiveError::RegisterNotFirstOperation => {
                TrainError::PeerStopped(format!(
                    "peer {rank} of {world} stopped during {during} because another peer failed"
                ))
            }
            CollectiveError::Global(e) => TrainError::PeerStopped(format!(
                "peer {rank} of {world}: the collective across nodes failed during {during} ({e:?}): a node died or the network failed"
            )),
            other => TrainError::Other(format!(
                "peer {rank} of {world}: the collective failed during {during}: {other:?}"
            )),
        }
    }

    fn sum(
        &self,
        values: Tensor<Inner<B>, 1>,
        during: &str,
    ) -> Result<Tensor<Inner<B>, 1>, TrainError> {
        self.call(false, during, || {
            collective::all_reduce::<Inner<B>>(
                self.id(),
                values.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
        })
        .map(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
    }

    fn sum_host(&self, values: Vec<f32>, during: &str) -> Result<Vec<f32>, TrainError> {
        let n = values.len();
        let tensor = Tensor::<Inner<B>, 1>::from_data(TensorData::new(values, [n]), &self.device);
        self.sum(tensor, during)?
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Other(format!("reading the reduced {during}: {e:?}")))
    }

    /// Agrees on metric names the peers have not announced yet, and sums their values.
    fn new_metrics(
        &self,
        local: &MetricSums,
        state: &mut LinkState,
    ) -> Result<MetricSums, TrainError> {
        let mut text = String::new();
        for (name, _, _) in &local.0 {
            // A name that does not fit waits for a later step (its values of this step are
            // then not logged); thousands of bytes of new names in one step do not happen.
            if !state.names.contains(name) && text.len() + name.len() < NAME_BYTES {
                text.push_str(name);
                text.push('\n');
            }
        }
        let mut buffer = vec![0f32; NAME_BYTES * self.world];
        for (i, byte) in text.bytes().enumerate() {
            buffer[self.rank * NAME_BYTES + i] = byte as f32;
        }
        let all = self.sum_host(buffer, "the metric names")?;
        let first_new = state.names.len();
        for segment in all.chunks(NAME_BYTES) {
            let bytes: Vec<u8> = segment
                .iter()
                .take_while(|b| **b > 0.0)
                .map(|b| *b as u8)
                .collect();
            for name in String::from_utf8_lossy(&bytes).lines() {
                if !state.names.iter().any(|n| n == name) {
                    state.names.push(name.to_string());
                }
            }
        }
        let added = &state.names[first_new..];
        let mut values = vec![0f32; 2 * added.len()];
        for (i, name) in added.iter().enumerate() {
            if let Some((_, sum, weight)) = local.0.iter().find(|(n, _, _)| n == name) {
                values[2 * i] = *sum as f32;
                values[2 * i + 1] = *weight as f32;
            }
        }
        let summed = self.sum_host(values, "the new metrics")?;
        Ok(MetricSums(
            added
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), summed[2 * i] as f64, summed[2 * i + 1] as f64))
                .collect(),
        ))
    }
}

impl<B: AutodiffBackend> GradientExchange<B> for PeerLink<'_, B> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn exchange(
        &self,
        step: u64,
        model: &CausalLm<B>,
        grads: &GradientsParams,
        local: StepSums,
        failure: Option<PeerFailure>,
        non_finite: &dyn Fn(f64) -> TrainError,
    ) -> Result<StepSums, TrainError> {
        let mut state = self.state.borrow_mut();
        let mut present = Presence::<B> {
            grads,
            present: Vec::new(),
            _backend: std::marker::PhantomData,
        };
        model.visit(&mut present);
        let present = present.present;
        let flags = HEAD;
        let presence = flags + self.world;
        let metrics = presence + present.len();
        let mut status = vec![0f32; metrics + 2 * state.names.len()];
        status[0] = local.loss as f32;
        status[1] = local.tokens as f32;
        match &failure {
            Some(PeerFailure::NonFinite(value)) => {
                status[2] = 1.0;
                status[3] = *value as f32;
            }
            Some(PeerFailure::Error(_)) => status[flags + self.rank] = 1.0,
            None => {}
        }
        if local
            .metrics
            .0
            .iter()
            .any(|(n, _, _)| !state.names.contains(n))
        {
            status[4] = 1.0;
        }
        for (i, p) in present.iter().enumerate() {
            status[presence + i] = f32::from(u8::from(*p));
        }
        for (i, name) in state.names.iter().enumerate() {
            if let Some((_, sum, weight)) = local.metrics.0.iter().find(|(n, _, _)| n == name) {
                status[metrics + 2 * i] = *sum as f32;
                status[metrics + 2 * i + 1] = *weight as f32;
            }
        }
        let summed = self.sum_host(status, "the step's status")?;
        if let Some(peer) = (0..self.world).find(|p| summed[flags + p] > 0.0) {
            return Err(match failure {
                Some(PeerFailure::Error(e)) => e,
                _ => TrainError::PeerStopped(format!(
                    "peer {} of {} stopped at step {step}: peer {peer} failed (its error is reported by its own thread or node)",
                    self.rank, self.world
                )),
            });
        }
        if summed[2] > 0.0 {
            return Err(non_finite(summed[3] as f64));
        }
        state.present = summed[presence..metrics].iter().map(|c| *c > 0.0).collect();
        let mut sums = MetricSums(
            state
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let at = metrics + 2 * i;
                    (n.clone(), summed[at] as f64, summed[at + 1] as f64)
                })
                .collect(),
        );
        if summed[4] > 0.0 {
            sums.0
                .extend(self.new_metrics(&local.metrics, &mut state)?.0);
        }
        // A metric no micro-batch reported this step is left out, as one peer would.
        sums.0.retain(|(_, _, weight)| *weight > 0.0);
        Ok(StepSums {
            loss: summed[0] as f64,
            tokens: summed[1].round() as usize,
            metrics: sums,
        })
    }

    fn reduce_gradients(
        &self,
        model: &CausalLm<B>,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        let present = std::mem::take(&mut self.state.borrow_mut().present);
        let mut take = TakeGrads::<B> {
            grads: &mut grads,
            present: PresentParams {
                present: &present,
                index: 0,
            },
            device: self.device.clone(),
            flat: Vec::new(),
        };
        model.visit(&mut take);
        let flat = std::mem::take(&mut take.flat);
        let mut reduced = Vec::with_capacity(flat.len());
        let (mut bucket, mut size) = (Vec::new(), 0);
        for grad in flat {
            size += grad.dims()[0];
            bucket.push(grad);
            if size >= BUCKET_ELEMENTS {
                reduced.extend(self.reduce_bucket(std::mem::take(&mut bucket))?);
                size = 0;
            }
        }
        if !bucket.is_empty() {
            reduced.extend(self.reduce_bucket(bucket)?);
        }
        let mut put = PutGrads::<B, _> {
            grads: &mut grads,
            present: PresentParams {
                present: &present,
                index: 0,
            },
            reduced: reduced.into_iter(),
            _backend: std::marker::PhantomData,
        };
        model.visit(&mut put);
        Ok(grads)
    }
}

impl<B: AutodiffBackend> PeerLink<'_, B> {
    /// Sums a bucket of flattened gradients in one call and cuts it back into its parts.
    fn reduce_bucket(
        &self,
        parts: Vec<Tensor<Inner<B>, 1>>,
    ) -> Result<Vec<Tensor<Inner<B>, 1>>, TrainError> {
        let sizes: Vec<usize> = parts.iter().map(|p| p.dims()[0]).collect();
        let joined = Tensor::cat(parts, 0);
        let summed = self.sum(joined, "the gradient all-reduce")?;
        Ok(if sizes.len() == 1 {
            vec![summed]
        } else {
            summed.split_with_sizes(sizes, 0)
        })
    }
}

/// Marks, in module order, the trainable parameters that have a gradient.
struct Presence<'a, B> {
    grads: &'a GradientsParams,
    present: Vec<bool>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Presence<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            let has = self.grads.get::<Inner<B>, D>(param.id).is_some();
            self.present.push(has);
        }
    }
}

/// Takes the gradients of the parameters some peer has one for, flattened, in module order;
/// a peer without one contributes zeros, so every peer sends the same shapes.
struct TakeGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    present: PresentParams<'a>,
    device: B::Device,
    flat: Vec<Tensor<Inner<B>, 1>>,
}

/// Walks the trainable parameters in module order, saying which have a gradient on some peer.
struct PresentParams<'a> {
    present: &'a [bool],
    index: usize,
}

impl PresentParams<'_> {
    fn next<B: Backend, const D: usize>(&mut self, param: &Param<Tensor<B, D>>) -> bool {
        if !param.is_require_grad() {
            return false;
        }
        self.index += 1;
        self.present.get(self.index - 1).copied().unwrap_or(false)
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for TakeGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.present.next(param) {
            return;
        }
        let flat = match self.grads.remove::<Inner<B>, D>(param.id) {
            Some(grad) => grad.flatten::<1>(0, D - 1),
            None => Tensor::zeros([param.shape().num_elements()], &self.device),
        };
        self.flat.push(flat);
    }
}

/// Puts the summed gradients back, in the order [`TakeGrads`] took them.
struct PutGrads<'a, B: AutodiffBackend, I: Iterator<Item = Tensor<Inner<B>, 1>>> {
    grads: &'a mut GradientsParams,
    present: PresentParams<'a>,
    reduced: I,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend, I: Iterator<Item = Tensor<Inner<B>, 1>>> ModuleVisitor<B>
    for PutGrads<'_, B, I>
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.present.next(param) {
            return;
        }
        if let Some(flat) = self.reduced.next() {
            self.grads.register(param.id, flat.reshape(param.dims()));
        }
    }
}
