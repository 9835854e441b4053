//! Rows of features as models read them: numeric features (NaN when missing) and
//! categorical ones, row-major, in catalog order.

use crate::catalog::{Kind, FEATURES};
use crate::features::FeatureValue;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub numeric_names: Vec<String>,
    pub categorical_names: Vec<String>,
    /// rows x numeric_names.len(), NaN for NULL.
    pub numeric: Vec<f64>,
    /// rows x categorical_names.len().
    pub categorical: Vec<Option<String>>,
    pub rows: usize,
}

impl Frame {
    /// An empty frame with the catalog's columns.
    pub fn for_catalog() -> Frame {
        Frame {
            numeric_names: FEATURES
                .iter()
                .filter(|f| f.kind != Kind::Category)
                .map(|f| f.name.to_string())
                .collect(),
            categorical_names: FEATURES
                .iter()
                .filter(|f| f.kind == Kind::Category)
                .map(|f| f.name.to_string())
                .collect(),
            ..Frame::default()
        }
    }

    /// Appends one row given in catalog order.
    pub fn push_catalog_row(&mut self, values: &[FeatureValue]) {
        for v in values {
            match v {
                FeatureValue::Num(x) => self.numeric.push(x.unwrap_or(f64::NAN)),
                FeatureValue::Text(t) => self.categorical.push(t.clone()),
            }
        }
        self.rows += 1;
    }

    pub fn numeric_row(&self, i: usize) -> &[f64] {
        let w = self.numeric_names.len();
        &self.numeric[i * w..(i + 1) * w]
    }

    pub fn categorical_row(&self, i: usize) -> &[Option<String>] {
        let w = self.categorical_names.len();
        &self.categorical[i * w..(i + 1) * w]
    }

    /// Makes room for `rows` more rows, or an error instead of an abort.
    pub fn try_reserve_rows(&mut self, rows: usize) -> Result<(), crate::Error> {
        crate::work::try_grow(&mut self.numeric, rows * self.numeric_names.len())?;
        crate::work::try_grow(&mut self.categorical, rows * self.categorical_names.len())
    }

    /// Keeps the rows whose `keep` entry is true, in order.
    pub fn retain_rows(&mut self, keep: &[bool]) {
        let (w, c) = (self.numeric_names.len(), self.categorical_names.len());
        let mut i = 0;
        self.numeric.retain(|_| {
            let k = keep[i / w.max(1)];
            i += 1;
            k
        });
        let mut i = 0;
        self.categorical.retain(|_| {
            let k = keep[i / c.max(1)];
            i += 1;
            k
        });
        self.rows = keep.iter().filter(|&&k| k).count();
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Frame {
        let mut out = Frame {
            numeric_names: self.numeric_names.clone(),
            categorical_names: self.categorical_names.clone(),
            ..Frame::default()
        };
        for &i in idx {
            out.numeric.extend_from_slice(self.numeric_row(i));
            out.categorical.extend_from_slice(self.categorical_row(i));
            out.rows += 1;
        }
        out
    }
}
