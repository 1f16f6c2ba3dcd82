//! Image messages on the wire and the agent's own types: a manifest from the cluster's
//! store, checked as it arrives ([`TryFrom`]), and the node's image report.

use shoal_proto::pb;

use super::source::{BlobRef, ImageManifest};
use crate::runtime::ImageInfo;

/// A manifest the agent cannot use: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image manifest for {reference:?}: {reason}")]
pub struct InvalidManifest {
    pub reference: String,
    pub reason: String,
}

/// `HEX` of `sha256:HEX` or `HEX`, when it is 64 lowercase hex digits.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

impl TryFrom<pb::ImageManifest> for ImageManifest {
    type Error = InvalidManifest;

    fn try_from(m: pb::ImageManifest) -> Result<Self, Self::Error> {
        let invalid = |reason: String| InvalidManifest {
            reference: m.reference.clone(),
            reason,
        };
        let id = sha256_hex(&m.id)
            .ok_or_else(|| invalid(format!("id {:?} is not a sha256 digest", m.id)))?;
        let layers = m
            .layers
            .iter()
            .map(|l| {
                let digest = sha256_hex(&l.digest).ok_or_else(|| {
                    invalid(format!(
                        "layer digest {:?} is not a sha256 digest",
                        l.digest
                    ))
                })?;
                Ok(BlobRef {
                    digest: digest.to_string(),
                    size: l.size,
                })
            })
            .collect::<Result<Vec<_>, InvalidManifest>>()?;
        Ok(ImageManifest {
            id: format!("sha256:{id}"),
            reference: m.reference,
            layers,
            config_size: m.config_size,
        })
    }
}

/// The node's images as the session reports them.
pub fn image_report_message(images: &[ImageInfo]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Images(pb::ImageReport {
            images: images
                .iter()
                .map(|i| pb::NodeImage {
                    id: i.id.clone(),
                    tags: i.tags.clone(),
                    size_bytes: i.size,
                })
                .collect(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn digests_with_or_without_their_prefix_are_accepted() {
        let m = pb::ImageManifest {
            reference: "app:1".into(),
            id: A.into(),
            layers: vec![pb::BlobRef {
                digest: format!("sha256:{A}"),
                size: 3,
            }],
            config_size: 7,
            holders: vec![1],
        };
        let m = ImageManifest::try_from(m).unwrap();
        assert_eq!(m.id, format!("sha256:{A}"));
        assert_eq!(m.layers[0].digest, A);
        assert_eq!(m.layers[0].diff_id(), format!("sha256:{A}"));
    }

    #[test]
    fn a_digest_that_is_not_sha256_is_refused() {
        let m = pb::ImageManifest {
            reference: "app:1".into(),
            id: format!("sha256:{A}"),
            layers: vec![pb::BlobRef {
                digest: "../../etc/passwd".into(),
                size: 3,
            }],
            ..Default::default()
        };
        let e = ImageManifest::try_from(m).unwrap_err();
        assert!(e.to_string().contains("../../etc/passwd"), "{e}");
        assert!(sha256_hex(&A.to_uppercase()).is_none());
        assert!(sha256_hex(&A[1..]).is_none());
    }
}
