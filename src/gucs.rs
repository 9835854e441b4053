//! The extension's settings. Each is a private static behind an accessor that documents
//! its unit; all are superuser-only (`SUSET`): they bound what any caller may use of the
//! server, so an analyst cannot raise them for themselves.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use customer_analyzer_core::work::MB;

static MAX_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
static MAX_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(2048);
static MAX_MODEL_MB: GucSetting<i32> = GucSetting::<i32>::new(32);
static MODEL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(16);
static FEATURE_WORK_MEM_KB: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);
static WORKER_DATABASE: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"postgres"));
static NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(100);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);
static WORKER_HISTORIES_MB: GucSetting<i32> = GucSetting::<i32>::new(128);
static REALTIME: GucSetting<bool> = GucSetting::<bool>::new(true);
static INCREMENTAL_REFRESH: GucSetting<bool> = GucSetting::<bool>::new(true);
static PREDICTION_RETENTION_MIN: GucSetting<i32> = GucSetting::<i32>::new(180 * 24 * 60);
static MONITOR_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(3600);
static RETRAIN_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);
static RETRAIN_AUC_DROP: GucSetting<f64> = GucSetting::<f64>::new(0.05);

/// Registers the settings; called once from `_PG_init`.
pub fn init() {
    GucRegistry::define_int_guc(
        c"customer_analyzer.max_threads",
        c"Threads one call of customer_analyzer may use for training, scoring and segmentation.",
        c"0 (the default) means half the server's cores, at least 1. These threads live inside the backend and are not counted by max_parallel_workers.",
        &MAX_THREADS,
        0,
        256,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.max_memory_mb",
        c"Memory one call of customer_analyzer may plan to use, in MB.",
        c"Estimated before allocating: training samples users to fit, other calls are refused with SQLSTATE 54000.",
        &MAX_MEMORY_MB,
        16,
        1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.max_model_mb",
        c"Largest model customer_analyzer stores, in MB.",
        c"Tree models stop growing at this size and say so; every backend that predicts keeps a decoded copy.",
        &MAX_MODEL_MB,
        1,
        1024,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.model_cache_size",
        c"Decoded models one backend keeps.",
        c"Together with four times customer_analyzer.max_model_mb of blobs, this bounds each backend's model cache.",
        &MODEL_CACHE_SIZE,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.feature_work_mem",
        c"work_mem of the all-user feature query (user_features(), refresh_features()) and of data_quality().",
        c"The query sorts and hashes every event once, and data_quality() every user id; more memory keeps that off disk. Restored when the function returns.",
        &FEATURE_WORK_MEM_KB,
        64,
        i32::MAX / 2,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    // the real-time path (src/realtime.rs, src/worker.rs)
    GucRegistry::define_string_guc(
        c"customer_analyzer.database",
        c"The database the rescoring worker serves.",
        c"Read when the worker starts: a change (postgresql.conf, then a reload) takes effect when the worker next starts, after a server restart or pg_terminate_backend() on it.",
        &WORKER_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.naptime_ms",
        c"How long the rescoring worker waits before it looks at the queue again, unless it just took a full batch, in milliseconds.",
        c"Bounds the delay between an event and its fresh score (half of it on average); meanwhile events gather into one batch, so a shorter naptime gives fresher scores for more of the server's CPU.",
        &NAPTIME_MS,
        1,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.batch_size",
        c"Users the rescoring worker takes from the queue per transaction.",
        c"Larger batches rescore more users per second; smaller ones publish the first scores sooner.",
        &BATCH_SIZE,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.worker_histories_mb",
        c"Memory the rescoring worker keeps users' event histories in, so that a user's next event reads only the new events (0: read every history in full).",
        c"The least recently rescored users go first; a history is read in full again after an update or delete of its events, a late event, a change of the events table's storage, or ten minutes.",
        &WORKER_HISTORIES_MB,
        0,
        65_536,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_bool_guc(
        c"customer_analyzer.realtime",
        c"Whether events are queued for rescoring and the worker drains the queue.",
        c"The kill switch of the real-time path: off, the trigger on the events table does nothing and the worker idles.",
        &REALTIME,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"customer_analyzer.incremental_refresh",
        c"Whether refresh_features() may recompute only the users whose events changed or crossed a window's edge.",
        c"On (the default), a refresh after an earlier one reads the events of those users only and moves everyone else's row to the new time; off, every refresh reads every user's events. Turn it off for one refresh after loading events with the real-time triggers disabled.",
        &INCREMENTAL_REFRESH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.prediction_retention",
        c"How long the prediction log, the rescoring queue, worker_errors and retrain_log keep rows.",
        c"prune() deletes older rows; the rescoring worker calls it every few minutes. 0 keeps everything. Keep it longer than the longest horizon (60 days) plus the time between evaluate_matured() runs, or predictions are pruned before their outcome is known.",
        &PREDICTION_RETENTION_MIN,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MIN,
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.monitor_interval",
        c"How often the retraining worker checks the deployed models.",
        c"The rescoring worker starts the retraining worker this often: it records matured outcomes (evaluate_matured), checks drift and live AUC, and retrains a task when retrain_interval, drift or customer_analyzer.retrain_auc_drop call for it. 0 turns the checks off.",
        &MONITOR_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"customer_analyzer.retrain_interval",
        c"The age at which the retraining worker retrains a serving model.",
        c"Counted from the model's training or the last retrain tried, whichever is later. 0: no scheduled retraining (drift and live AUC still trigger one).",
        &RETRAIN_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"customer_analyzer.retrain_auc_drop",
        c"How far live AUC may fall below the holdout AUC before the retraining worker retrains.",
        c"Judged on the matured predictions evaluate_matured() recorded, once there are at least 200.",
        &RETRAIN_AUC_DROP,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// How long logs keep rows (`prune()`), in minutes; None keeps everything.
pub fn prediction_retention_minutes() -> Option<i64> {
    match PREDICTION_RETENTION_MIN.get() {
        0 => None,
        m => Some(i64::from(m.max(0))),
    }
}

/// The database the rescoring worker connects to.
pub fn worker_database() -> String {
    WORKER_DATABASE
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_else(|| "postgres".into())
}

/// The worker's sleep when the queue is empty.
pub fn naptime() -> std::time::Duration {
    std::time::Duration::from_millis(NAPTIME_MS.get().max(1) as u64)
}

/// Users per worker transaction.
pub fn batch_size() -> i64 {
    i64::from(BATCH_SIZE.get().max(1))
}

/// The rescoring worker's budget for kept histories, in bytes (0: none).
pub fn worker_histories_bytes() -> usize {
    usize::try_from(WORKER_HISTORIES_MB.get().max(0)).unwrap_or(0) * 1024 * 1024
}

/// The real-time kill switch.
pub fn realtime() -> bool {
    REALTIME.get()
}

/// `customer_analyzer.feature_work_mem` in kB.
pub fn feature_work_mem_kb() -> i32 {
    FEATURE_WORK_MEM_KB.get()
}

/// Whether refresh_features() may refresh incrementally.
pub fn incremental_refresh() -> bool {
    INCREMENTAL_REFRESH.get()
}

/// Threads for one call: the setting, or half the cores when it is 0.
pub fn max_threads() -> usize {
    match MAX_THREADS.get() {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism()
            .map(|n| (n.get() / 2).max(1))
            .unwrap_or(1),
    }
}

/// The memory budget of one call, in bytes.
pub fn max_memory_bytes() -> usize {
    MAX_MEMORY_MB.get().max(1) as usize * MB
}

/// How many decoded models a backend keeps.
pub fn model_cache_size() -> usize {
    MODEL_CACHE_SIZE.get().max(1) as usize
}

/// The largest stored model, in bytes.
pub fn max_model_bytes() -> usize {
    MAX_MODEL_MB.get().max(1) as usize * MB
}

/// How often the retraining worker runs; None: never.
pub fn monitor_interval() -> Option<std::time::Duration> {
    match MONITOR_INTERVAL_S.get() {
        s if s > 0 => Some(std::time::Duration::from_secs(s as u64)),
        _ => None,
    }
}

/// The scheduled retraining age in seconds; None: no schedule.
pub fn retrain_interval_seconds() -> Option<f64> {
    match RETRAIN_INTERVAL_S.get() {
        s if s > 0 => Some(f64::from(s)),
        _ => None,
    }
}

/// The fall in live AUC that calls for a retrain.
pub fn retrain_auc_drop() -> f64 {
    RETRAIN_AUC_DROP.get()
}
