//! NVML discovery with `nvml-wrapper`, which loads `libnvidia-ml.so.1` at run time.
//!
//! No library, or a library without a driver behind it, is a node without GPUs: said
//! once at info level, and tried again at every rediscovery (a driver installed later
//! is picked up). A GPU with MIG enabled is listed as its MIG instances, each its own
//! device with its own UUID (`MIG-…`) and memory; indexes then run on after the last
//! physical GPU's.

use std::sync::Mutex;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use tracing::{debug, info};

use super::{GpuDevice, GpuError, GpuInventory};

#[derive(Debug, Default)]
pub struct NvmlInventory {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nvml: Option<Nvml>,
    /// Why the last init failed, so that the same reason is logged once.
    absent: Option<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("loaded", &self.nvml.is_some())
            .field("absent", &self.absent)
            .finish()
    }
}

impl NvmlInventory {
    pub fn new() -> NvmlInventory {
        NvmlInventory::default()
    }
}

const MIG_ENABLED: u32 = 1;

fn err(what: &str, e: NvmlError) -> GpuError {
    GpuError::Nvml(format!("{what}: {e}"))
}

fn describe(d: &Device<'_>, index: u32) -> Result<GpuDevice, GpuError> {
    let mem = d.memory_info().map_err(|e| err("memory info", e))?;
    Ok(GpuDevice {
        uuid: d.uuid().map_err(|e| err("UUID", e))?,
        index,
        model: d.name().map_err(|e| err("name", e))?,
        memory_bytes: mem.total,
        utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
        memory_used_bytes: Some(mem.used),
    })
}

fn list(nvml: &Nvml) -> Result<Vec<GpuDevice>, GpuError> {
    let count = nvml.device_count().map_err(|e| err("device count", e))?;
    let mut whole = Vec::new();
    let mut migs = Vec::new();
    for i in 0..count {
        let d = nvml
            .device_by_index(i)
            .map_err(|e| err(&format!("device {i}"), e))?;
        let index = d.index().unwrap_or(i);
        let mig = matches!(d.mig_mode(), Ok(m) if m.current == MIG_ENABLED);
        if !mig {
            whole.push(describe(&d, index)?);
            continue;
        }
        let slots = d
            .mig_device_count()
            .map_err(|e| err("MIG device count", e))?;
        for s in 0..slots {
            // Empty MIG slots answer NotFound.
            if let Ok(m) = d.mig_device_by_index(s) {
                migs.push(m);
            }
        }
    }
    let first = whole
        .iter()
        .map(|g| g.index + 1)
        .max()
        .unwrap_or(0)
        .max(count);
    for (index, m) in (first..).zip(migs) {
        whole.push(describe(&m, index)?);
    }
    Ok(whole)
}

impl GpuInventory for NvmlInventory {
    fn discover(&self) -> Result<Vec<GpuDevice>, GpuError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.nvml.is_none() {
            match Nvml::init() {
                Ok(n) => {
                    info!("NVML loaded");
                    st.nvml = Some(n);
                    st.absent = None;
                }
                Err(e) => {
                    let why = e.to_string();
                    if st.absent.as_deref() != Some(why.as_str()) {
                        info!(reason = %why, "no NVIDIA GPUs: NVML is not available");
                    } else {
                        debug!(reason = %why, "NVML still not available");
                    }
                    st.absent = Some(why);
                    return Ok(Vec::new());
                }
            }
        }
        match st.nvml.as_ref() {
            Some(nvml) => list(nvml),
            None => Ok(Vec::new()),
        }
    }
}
