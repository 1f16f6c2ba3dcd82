//! Which layers of an image the engine lacks. Pure.
//!
//! An engine keeps a layer by its chain: the layer together with every layer under it.
//! A chain exists only as the prefix of some image's layers, so what the engine can
//! skip is the longest prefix of the wanted layers that is a prefix of some local
//! image's layers; every layer from there on must be sent (even one whose diff id
//! appears in another image at another height: its chain differs).

/// Index of the first of `wanted` (diff ids, base first) that `local` (each local
/// image's diff ids, base first) does not already hold as a chain; `wanted.len()` when
/// the engine holds them all.
pub fn first_missing<'a>(
    wanted: &[String],
    local: impl IntoIterator<Item = &'a [String]>,
) -> usize {
    local
        .into_iter()
        .map(|have| wanted.iter().zip(have).take_while(|(w, h)| w == h).count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<String> {
        s.chars().map(|c| format!("sha256:{c}")).collect()
    }

    fn plan(wanted: &str, local: &[&str]) -> usize {
        let local: Vec<Vec<String>> = local.iter().map(|l| ids(l)).collect();
        first_missing(&ids(wanted), local.iter().map(Vec::as_slice))
    }

    #[test]
    fn the_base_held_by_another_image_is_skipped() {
        assert_eq!(plan("abc", &["ab"]), 2);
        assert_eq!(plan("abc", &["abx", "a"]), 2);
        assert_eq!(plan("abc", &["abcd"]), 3);
        assert_eq!(plan("abc", &["abc"]), 3);
    }

    #[test]
    fn nothing_held_means_everything_is_sent() {
        assert_eq!(plan("abc", &[]), 0);
        assert_eq!(plan("abc", &["x", "bc"]), 0);
        assert_eq!(plan("", &["abc"]), 0);
    }

    #[test]
    fn a_layer_at_another_height_is_another_chain() {
        // `b` is there, but on top of `x`: its chain differs from ours.
        assert_eq!(plan("ab", &["xb"]), 0);
        assert_eq!(plan("abab", &["ab"]), 2);
    }

    /// Every wanted and local list of up to 4 layers over a 3-letter alphabet, against
    /// the definition: the largest `k` such that `wanted[..k]` starts some local image.
    #[test]
    fn agrees_with_the_definition_exhaustively() {
        fn words(max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| ['a', 'b', 'c'].map(|c| format!("{w}{c}")))
                    .collect();
                all.extend(last.iter().cloned());
            }
            all
        }
        let all = words(4);
        let short = words(3);
        for wanted in &all {
            for one in &short {
                for two in &short {
                    let got = plan(wanted, &[one, two]);
                    let want = (0..=wanted.len())
                        .filter(|&k| {
                            let prefix = &wanted[..k];
                            one.starts_with(prefix) || two.starts_with(prefix)
                        })
                        .max()
                        .unwrap();
                    assert_eq!(got, want, "wanted {wanted}, local {one} and {two}");
                    // Sending from `got` on is enough: the rest is a chain the engine has.
                    assert!(got <= wanted.len());
                }
            }
        }
    }
}
