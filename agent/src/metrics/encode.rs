//! Writing families of figures owned elsewhere through `prometheus-client`'s encoder:
//! label values escaped as the text format wants (the crate writes them as given), and
//! one call per family of gauges or counters.

use std::borrow::Cow;
use std::fmt::Write as _;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;

/// A label value, escaped (`\`, `"`, newline) when written.
#[derive(Debug, Clone)]
pub struct Value<'a>(pub Cow<'a, str>);

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value(Cow::Borrowed(s))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value(Cow::Owned(s))
    }
}

impl EncodeLabelValue for Value<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One series' labels, in the order they are written.
pub type Labels<'a> = Vec<(&'static str, Value<'a>)>;

/// A family of gauges: `name` with `help`, one sample per series (none: the family is
/// described and empty).
pub fn gauges<'a, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A family of counters: `name` (written with `_total` on its samples) with `help`.
pub fn counters<'a, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        family
            .encode_family(&labels)?
            .encode_counter::<(), V, u64>(&value, None)?;
    }
    Ok(())
}

/// Bytes as a gauge value (the encoder takes `i64`, not `u64`).
pub fn bytes(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
