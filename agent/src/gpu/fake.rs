//! A recording fake inventory: tests set the GPUs it reports, or an error, and count
//! how often the agent asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{GpuDevice, GpuError, GpuInventory};

#[derive(Debug, Clone)]
pub struct FakeInventory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    answer: Mutex<Result<Vec<GpuDevice>, GpuError>>,
    calls: AtomicU64,
}

impl Default for FakeInventory {
    fn default() -> Self {
        FakeInventory::new(Vec::new())
    }
}

impl FakeInventory {
    pub fn new(gpus: Vec<GpuDevice>) -> FakeInventory {
        FakeInventory {
            inner: Arc::new(Inner {
                answer: Mutex::new(Ok(gpus)),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// `n` GPUs `GPU-{prefix}-{i}` of `memory_gib` GiB each, model `model`.
    pub fn uniform(prefix: &str, n: u32, model: &str, memory_gib: u64) -> FakeInventory {
        FakeInventory::new((0..n).map(|i| gpu(prefix, i, model, memory_gib)).collect())
    }

    fn answer(&self) -> MutexGuard<'_, Result<Vec<GpuDevice>, GpuError>> {
        self.inner.answer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the next discoveries report.
    pub fn set(&self, gpus: Vec<GpuDevice>) {
        *self.answer() = Ok(gpus);
    }

    /// Make the next discoveries fail.
    pub fn fail(&self, error: GpuError) {
        *self.answer() = Err(error);
    }

    /// How many times the agent discovered.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::SeqCst)
    }
}

/// One GPU as a test writes it.
pub fn gpu(prefix: &str, index: u32, model: &str, memory_gib: u64) -> GpuDevice {
    GpuDevice {
        uuid: format!("GPU-{prefix}-{index}"),
        index,
        model: model.to_string(),
        memory_bytes: memory_gib << 30,
        utilization_percent: None,
        memory_used_bytes: None,
    }
}

impl GpuInventory for FakeInventory {
    fn discover(&self) -> Result<Vec<GpuDevice>, GpuError> {
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        self.answer().clone()
    }
}
