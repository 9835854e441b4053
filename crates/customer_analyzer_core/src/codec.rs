//! The stored model format: a 4-byte magic, a little-endian u16 format number, then the
//! model encoded with bincode 2 (serde). A blob with another magic or that does not
//! decode is corrupt; a newer format number is refused with its own error so that an
//! old extension never misreads a model written by a newer one.

use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::segment::Segmentation;
use crate::Error;

pub const MAGIC: [u8; 4] = *b"CAM\x01";
pub const FORMAT_VERSION: u16 = 1;

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
    let (payload, used) =
        bincode::serde::decode_from_slice(&bytes[6..], bincode::config::standard())
            .map_err(|e| Error::CorruptModel(e.to_string()))?;
    if used != bytes.len() - 6 {
        return Err(Error::CorruptModel("trailing bytes after the model".into()));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{tests_support::synthetic, train};
    use crate::params::{Algorithm, Estimator, Gbm, TrainParams};

    #[test]
    fn round_trip_and_refusals() {
        let data = synthetic(100, 2, 5);
        let p = TrainParams {
            estimator: Estimator::Gbm(Gbm {
                iterations: 10,
                ..Gbm::default()
            }),
            ..TrainParams::defaults(Algorithm::Gbm)
        };
        let (model, _) = train(&crate::work::Work::unbounded(1), &data, &p).unwrap();
        let blob = encode(&Payload::Classifier(model.clone())).unwrap();
        assert_eq!(decode(&blob).unwrap(), Payload::Classifier(model));
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
}
