//! What a deploy must do for each image its services run, from where the cluster says
//! the images are (`Control.ImagesAvailable`; in these tests every node means two). Pure: the engine and the store are
//! asked by [`super::deploy`].

use std::collections::BTreeSet;

use shoal_proto::pb::ImageWhere;

/// The step one image needs before the stack is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The cluster's store has it, or a node's engine does: nothing to do.
    Available,
    /// Built on this machine and not in the cluster's store: push it.
    PushBuilt,
    /// Nowhere in the cluster: push it from this machine's engine if it has it, else
    /// pull it there (if that works, the nodes can pull it too).
    LookLocally,
    /// On some nodes only: push it if this machine's engine has it (the other nodes
    /// could not get it otherwise without a registry); else the nodes that lack it pull
    /// it from its registry.
    PushIfLocal,
}

/// One decision per image, in the order given. An image the answer does not mention
/// is taken to be nowhere in the cluster.
pub fn decide(
    images: &[String],
    built: &BTreeSet<String>,
    places: &[ImageWhere],
) -> Vec<(String, Need)> {
    images
        .iter()
        .map(|image| {
            let place = places.iter().find(|w| &w.image == image);
            let in_store = place.is_some_and(|w| w.in_cluster);
            let on_a_node = place.is_some_and(|w| !w.nodes.is_empty());
            let on_every_node = place.is_some_and(|w| w.every_node);
            let need = if built.contains(image) {
                // A node holding a tag of that name is not enough: other nodes must be
                // able to get exactly this build from the store.
                if in_store {
                    Need::Available
                } else {
                    Need::PushBuilt
                }
            } else if in_store || on_every_node {
                Need::Available
            } else if on_a_node {
                Need::PushIfLocal
            } else {
                Need::LookLocally
            };
            (image.clone(), need)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(image: &str, in_cluster: bool, nodes: &[&str]) -> ImageWhere {
        ImageWhere {
            every_node: nodes.len() == 2,
            image: image.into(),
            in_cluster,
            id: if in_cluster {
                "sha256:ab".into()
            } else {
                String::new()
            },
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn each_image_gets_what_it_needs() {
        let images: Vec<String> = [
            "web:shoal-1",
            "api:shoal-2",
            "redis:7",
            "pg:16",
            "own:1",
            "gone:1",
            "some:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let built = BTreeSet::from(["web:shoal-1".to_string(), "api:shoal-2".to_string()]);
        let places = [
            at("web:shoal-1", true, &[]),
            at("api:shoal-2", false, &["n1"]),
            at("redis:7", false, &["n1", "n2"]),
            at("some:1", false, &["n2"]),
            at("pg:16", true, &[]),
            at("own:1", false, &[]),
        ];
        assert_eq!(
            decide(&images, &built, &places),
            vec![
                ("web:shoal-1".to_string(), Need::Available),
                ("api:shoal-2".to_string(), Need::PushBuilt),
                ("redis:7".to_string(), Need::Available),
                ("pg:16".to_string(), Need::Available),
                ("own:1".to_string(), Need::LookLocally),
                ("gone:1".to_string(), Need::LookLocally),
                ("some:1".to_string(), Need::PushIfLocal),
            ]
        );
    }
}
