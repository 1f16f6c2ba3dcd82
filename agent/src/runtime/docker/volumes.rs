//! Named volumes on a Docker engine: create, inspect, list by node label, remove. API 1.41
//! has every call and field used here (`CreatedAt` since 1.29, label filters since 1.21).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::Volume;
use bollard::volume::{CreateVolumeOptions, ListVolumesOptions, RemoveVolumeOptions};
use bollard::Docker;
use shoal_proto::labels;

use super::{engine, status_of};
use crate::runtime::{RuntimeError, RuntimeResult, VolumeInfo, VolumeRequest};

pub(super) async fn create(docker: &Docker, req: &VolumeRequest) -> RuntimeResult<VolumeInfo> {
    let options = CreateVolumeOptions {
        name: req.name.clone(),
        driver: req.driver.clone().unwrap_or_else(|| "local".to_string()),
        driver_opts: req.driver_opts.clone().into_iter().collect(),
        labels: req.labels.clone().into_iter().collect(),
    };
    docker
        .create_volume(options)
        .await
        .map(from_docker)
        .map_err(engine)
}

pub(super) async fn inspect(docker: &Docker, name: &str) -> RuntimeResult<VolumeInfo> {
    docker
        .inspect_volume(name)
        .await
        .map(from_docker)
        .map_err(engine)
}

pub(super) async fn list(docker: &Docker, node: &str) -> RuntimeResult<Vec<VolumeInfo>> {
    let filters: HashMap<String, Vec<String>> = [(
        "label".to_string(),
        vec![format!("{}={node}", labels::NODE)],
    )]
    .into();
    let list = docker
        .list_volumes(Some(ListVolumesOptions { filters }))
        .await
        .map_err(engine)?;
    Ok(list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(from_docker)
        // Older engines matched label filters loosely; keep exactly this node's.
        .filter(|v| v.labels.get(labels::NODE).map(String::as_str) == Some(node))
        .collect())
}

pub(super) async fn remove(docker: &Docker, name: &str) -> RuntimeResult<()> {
    match docker
        .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(409) => Err(RuntimeError::InUse(match engine(e) {
            RuntimeError::Engine(m) => m,
            other => other.to_string(),
        })),
        Err(e) => Err(engine(e)),
    }
}

fn from_docker(v: Volume) -> VolumeInfo {
    VolumeInfo {
        created_ms: v.created_at.as_deref().and_then(rfc3339_ms).unwrap_or(0),
        name: v.name,
        driver: v.driver,
        mountpoint: (!v.mountpoint.is_empty()).then(|| PathBuf::from(v.mountpoint)),
        labels: v.labels.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time as Docker writes it
/// (`2024-05-01T12:30:00.123456789Z`, or with an offset such as `+02:00`).
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if rest.len() < 8 {
        return None;
    }
    let (hms, mut tail) = rest.split_at(8);
    let mut t = hms.splitn(3, ':');
    let (h, mi, se) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    let mut millis = 0i64;
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = &frac[..digits];
        millis = num(&format!("{:0<3}", &f[..f.len().min(3)]))?;
        tail = &frac[digits..];
    }
    let offset_s = match tail {
        "Z" | "z" => 0,
        _ => {
            let sign = match tail.chars().next()? {
                '+' => 1,
                '-' => -1,
                _ => return None,
            };
            let (oh, om) = tail[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_become_epoch_milliseconds() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2024-05-01T12:30:00.123456789Z"),
            Some(1_714_566_600_123)
        );
        assert_eq!(
            rfc3339_ms("2024-05-01T14:30:00.5+02:00"),
            Some(1_714_566_600_500)
        );
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(rfc3339_ms(""), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms("2024-13-01T00:00:00Z"), None);
    }
}
