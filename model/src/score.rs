//! Scores: what a model returns for one record.

use crate::record::Value;

/// One named output value for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputValue {
    /// A number (a rank-1 tensor's element, a PMML numeric field).
    Number(f64),
    /// A string (label).
    Text(String),
    /// A vector of numbers (a rank-2 tensor's row; higher ranks flattened).
    Numbers(Vec<f64>),
    /// A vector of strings.
    Texts(Vec<String>),
    /// Label to probability, in the model's class order (ONNX ZipMap).
    Map(Vec<(String, f64)>),
    /// No value (a PMML output that could not be computed).
    Missing,
}

/// The result of scoring one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The headline value a serving result reports: the regression value, the class label,
    /// or for a vector output the argmax index (the tutorial's TensorFlow score).
    pub value: Value,
    /// Every output by name, in the order of [`crate::Model::outputs`].
    pub outputs: Vec<(String, OutputValue)>,
}

impl Score {
    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputValue> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The first label/probability map among the outputs, if any.
    pub fn probabilities(&self) -> Option<&[(String, f64)]> {
        self.outputs.iter().find_map(|(_, v)| match v {
            OutputValue::Map(m) => Some(m.as_slice()),
            _ => None,
        })
    }
}

impl Score {
    /// The wire form of this score ([`crate::pb::ServingResult`], `processed` set): the
    /// headline value as `value` or `label`, the first label map as `probabilities`, and every
    /// output. The caller fills in the record's key and timestamp.
    #[inline]
    pub fn to_serving_result(
        &self,
        model_name: &str,
        data_type: &str,
        duration: std::time::Duration,
    ) -> crate::pb::ServingResult {
        self.to_serving_result_for(model_name, data_type, duration, 0, Vec::new())
    }

    /// [`to_serving_result`](Self::to_serving_result) with the record's timestamp and key filled
    /// in: the result comes back complete, with no field to set (and no copy to make) afterwards.
    pub fn to_serving_result_for(
        &self,
        model_name: &str,
        data_type: &str,
        duration: std::time::Duration,
        record_ts: i64,
        record_key: Vec<u8>,
    ) -> crate::pb::ServingResult {
        use crate::pb::{named_output, serving_result, LabelProbabilities, LabelProbability};
        let pairs = |m: &[(String, f64)]| -> Vec<LabelProbability> {
            m.iter()
                .map(|(label, probability)| LabelProbability {
                    label: label.clone(),
                    probability: *probability,
                })
                .collect()
        };
        let outputs = self
            .outputs
            .iter()
            .map(|(name, v)| crate::pb::NamedOutput {
                name: name.clone(),
                value: match v {
                    OutputValue::Number(x) => Some(named_output::Value::Number(*x)),
                    OutputValue::Text(t) => Some(named_output::Value::Text(t.clone())),
                    OutputValue::Numbers(xs) => {
                        Some(named_output::Value::Numbers(crate::pb::NumberList {
                            values: xs.clone(),
                        }))
                    }
                    OutputValue::Texts(ts) => Some(named_output::Value::Text(ts.join(","))),
                    OutputValue::Map(m) => Some(named_output::Value::Map(LabelProbabilities {
                        entries: pairs(m),
                    })),
                    OutputValue::Missing => None,
                },
            })
            .collect();
        crate::pb::ServingResult {
            processed: true,
            score: match &self.value {
                Value::Number(x) => Some(serving_result::Score::Value(*x)),
                Value::Text(t) => Some(serving_result::Score::Label(t.clone())),
                Value::Missing => None,
            },
            probabilities: self.probabilities().map(pairs).unwrap_or_default(),
            model_name: model_name.to_string(),
            data_type: data_type.to_string(),
            duration_ns: i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX),
            outputs,
            record_ts,
            record_key,
            ..Default::default()
        }
    }
}

/// The index of the largest element (first on ties); `None` for an empty slice or when a NaN is
/// present.
pub fn argmax(values: &[f64]) -> Option<usize> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().copied().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_of_ties_and_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), Some(1));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, f64::NAN]), None);
        assert_eq!(argmax(&[-3.0]), Some(0));
    }

    #[test]
    fn serving_result_carries_label_and_probabilities() {
        let s = Score {
            value: Value::Text("b".into()),
            outputs: vec![
                ("label".into(), OutputValue::Text("b".into())),
                (
                    "p".into(),
                    OutputValue::Map(vec![("a".into(), 0.25), ("b".into(), 0.75)]),
                ),
                ("gone".into(), OutputValue::Missing),
            ],
        };
        let r = s.to_serving_result("m", "wine", std::time::Duration::from_micros(3));
        assert!(r.processed);
        assert_eq!(
            r.score,
            Some(crate::pb::serving_result::Score::Label("b".into()))
        );
        assert_eq!(r.probabilities.len(), 2);
        assert_eq!(r.probabilities[1].probability, 0.75);
        assert_eq!(r.duration_ns, 3000);
        assert_eq!(r.outputs.len(), 3);
        assert_eq!(r.outputs[2].value, None);
        assert_eq!(r.model_name, "m");
    }

    #[test]
    fn finds_outputs_and_probabilities() {
        let s = Score {
            value: Value::Text("b".into()),
            outputs: vec![
                ("label".into(), OutputValue::Text("b".into())),
                (
                    "probs".into(),
                    OutputValue::Map(vec![("a".into(), 0.25), ("b".into(), 0.75)]),
                ),
            ],
        };
        assert_eq!(s.output("label"), Some(&OutputValue::Text("b".into())));
        assert_eq!(s.output("nope"), None);
        assert_eq!(s.probabilities().map(|p| p.len()), Some(2));
    }
}
