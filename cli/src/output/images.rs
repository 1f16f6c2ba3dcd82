//! `shoal image ls`: the images of the cluster's store and those services use.

use serde_json::{json, Value};
use shoal_proto::pb::ImageRow;

/// `[{"image","id","size_bytes","nodes":[..],"services":[..]}]`, exactly (DESIGN.md).
pub fn json(rows: &[ImageRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "image": r.image,
                    "id": r.id,
                    "size_bytes": r.size_bytes,
                    "nodes": r.nodes,
                    "services": r.services,
                })
            })
            .collect(),
    )
}

/// One row per image; CONTROLLERS are those storing it (`-`: not in the store).
pub fn table(rows: &[ImageRow]) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let controllers: Vec<String> = r.controllers.iter().map(u64::to_string).collect();
            vec![
                r.image.clone(),
                short_id(&r.id),
                if r.size_bytes == 0 && r.controllers.is_empty() {
                    "-".to_string()
                } else {
                    super::bytes(r.size_bytes as i64)
                },
                list(&r.nodes),
                list(&r.services),
                list(&controllers),
            ]
        })
        .collect();
    super::table(
        &["IMAGE", "ID", "SIZE", "NODES", "SERVICES", "CONTROLLERS"],
        &cells,
    )
}

/// The first 12 hex digits of `sha256:HEX`, as `docker images` shows ids.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.is_empty() {
        "-".to_string()
    } else {
        hex.chars().take(12).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<ImageRow> {
        vec![
            ImageRow {
                image: "shop-web:shoal-0123456789ab".into(),
                id: "sha256:0123456789abcdef".into(),
                size_bytes: 2048,
                nodes: vec!["n1".into(), "n2".into()],
                services: vec!["shop/web".into()],
                controllers: vec![1, 2],
            },
            ImageRow {
                image: "redis:7".into(),
                nodes: vec!["n3".into()],
                services: vec!["shop/cache".into()],
                ..Default::default()
            },
        ]
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        let v = json(&rows());
        assert_eq!(
            v,
            serde_json::json!([
                {"image": "shop-web:shoal-0123456789ab", "id": "sha256:0123456789abcdef",
                 "size_bytes": 2048, "nodes": ["n1", "n2"], "services": ["shop/web"]},
                {"image": "redis:7", "id": "", "size_bytes": 0, "nodes": ["n3"],
                 "services": ["shop/cache"]},
            ])
        );
    }

    #[test]
    fn the_table_names_the_controllers_holding_each() {
        assert_eq!(
            table(&rows()),
            "IMAGE                        ID            SIZE    NODES  SERVICES    CONTROLLERS\n\
             shop-web:shoal-0123456789ab  0123456789ab  2.0KiB  n1,n2  shop/web    1,2\n\
             redis:7                      -             -       n3     shop/cache  -\n"
        );
    }
}
