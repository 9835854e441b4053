//! The stored model format: a 4-byte magic, a little-endian u16 format number, then the
//! model encoded with bincode 2 (serde). A blob with another magic or that does not
//! decode is corrupt; a newer format number is refused with its own error so that an
//! old extension never misreads a model written by a newer one, while older formats
//! still decode.
//!
//! Format 1 (extension 0.1 and 0.2): classifiers had no calibrator.
//! Format 2 (0.3): classifiers carry an optional isotonic calibrator; segmentations
//! their view (the inputs they cluster) and the silhouette of each view tried.

use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::segment::Segmentation;
use crate::Error;

pub const MAGIC: [u8; 4] = *b"CAM\x01";
pub const FORMAT_VERSION: u16 = 2;

/// Everything a model row can hold. New kinds are appended, never reordered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Payload {
    Classifier(Model),
    Segmentation(Segmentation),
}

pub fn encode(payload: &Payload) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let body = bincode::serde::encode_to_vec(payload, bincode::config::standard())
        .map_err(|e| Error::Internal(format!("encoding a model: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Payload, Error> {
    if bytes.len() < 6 || bytes[..4] != MAGIC {
        return Err(Error::CorruptModel(
            "the blob does not start with the model magic".into(),
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version > FORMAT_VERSION {
        return Err(Error::FutureModelVersion(version));
    }
    let body = &bytes[6..];
    match version {
        1 => Ok(body_of::<v1::Payload>(body)?.into()),
        _ => body_of::<Payload>(body),
    }
}

fn body_of<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let (payload, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| Error::CorruptModel(e.to_string()))?;
    if used != body.len() {
        return Err(Error::CorruptModel("trailing bytes after the model".into()));
    }
    Ok(payload)
}

/// Format 1, read only.
pub(crate) mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::model::{self, Estimator};
    use crate::params::Algorithm;
    use crate::preprocess::Preprocessor;
    use crate::segment::{self, Inputs, Quality, SegAlgorithm, Segment};

    #[derive(Serialize, Deserialize)]
    pub struct Model {
        pub algorithm: Algorithm,
        pub preprocessor: Preprocessor,
        pub estimator: Estimator,
        pub threshold: f64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Segmentation {
        pub algorithm: SegAlgorithm,
        pub preprocessor: Preprocessor,
        pub centres: Vec<Vec<f64>>,
        pub radius: Option<Vec<f64>>,
        pub segments: Vec<Segment>,
        pub quality: Quality,
        pub population: Vec<f64>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Payload {
        Classifier(Model),
        Segmentation(Segmentation),
    }

    impl From<Payload> for super::Payload {
        fn from(p: Payload) -> Self {
            match p {
                Payload::Classifier(m) => super::Payload::Classifier(model::Model {
                    algorithm: m.algorithm,
                    preprocessor: m.preprocessor,
                    estimator: m.estimator,
                    threshold: m.threshold,
                    calibrator: None,
                }),
                Payload::Segmentation(s) => super::Payload::Segmentation(segment::Segmentation {
                    algorithm: s.algorithm,
                    inputs: Inputs::all_features(),
                    view_silhouettes: Vec::new(),
                    preprocessor: s.preprocessor,
                    centres: s.centres,
                    radius: s.radius,
                    segments: s.segments,
                    quality: s.quality,
                    population: s.population,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        tests_support::{split, synthetic},
        train,
    };
    use crate::params::{Algorithm, Estimator, Gbm, TrainParams};

    #[test]
    fn round_trip_and_refusals() {
        let data = synthetic(100, 3, 5);
        let p = TrainParams {
            estimator: Estimator::Gbm(Gbm {
                iterations: 10,
                ..Gbm::default()
            }),
            ..TrainParams::defaults(Algorithm::Gbm)
        };
        let (model, _) = train(&crate::work::Work::unbounded(1), &data, &split(&data), &p).unwrap();
        let blob = encode(&Payload::Classifier(model.clone())).unwrap();
        assert_eq!(decode(&blob).unwrap(), Payload::Classifier(model.clone()));
        let mut future = blob.clone();
        future[4] = 99;
        assert_eq!(decode(&future), Err(Error::FutureModelVersion(99)));
        let mut flipped = blob.clone();
        flipped[0] = b'X';
        assert!(matches!(decode(&flipped), Err(Error::CorruptModel(_))));
        assert!(matches!(
            decode(&blob[..blob.len() / 2]),
            Err(Error::CorruptModel(_))
        ));
        assert!(matches!(decode(b""), Err(Error::CorruptModel(_))));
    }

    #[test]
    fn format_1_blobs_still_decode() {
        let data = synthetic(100, 3, 5);
        let p = TrainParams::defaults(Algorithm::Logistic);
        let (model, _) = train(&crate::work::Work::unbounded(1), &data, &split(&data), &p).unwrap();
        let old = v1::Payload::Classifier(v1::Model {
            algorithm: model.algorithm,
            preprocessor: model.preprocessor.clone(),
            estimator: model.estimator.clone(),
            threshold: model.threshold,
        });
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&1u16.to_le_bytes());
        blob.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        let Payload::Classifier(read) = decode(&blob).unwrap() else {
            panic!("not a classifier")
        };
        assert_eq!(read.calibrator, None);
        assert_eq!(read.estimator, model.estimator);
        // a format-2 blob is not mistaken for format 1
        let mut with_calibrator = model.clone();
        with_calibrator.calibrator = Some(crate::calibration::Calibrator::Isotonic {
            x: vec![0.1, 0.9],
            y: vec![0.2, 0.7],
        });
        let blob = encode(&Payload::Classifier(with_calibrator.clone())).unwrap();
        assert_eq!(decode(&blob).unwrap(), Payload::Classifier(with_calibrator));
    }
}
