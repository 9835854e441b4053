//! Customer segmentation: k-means (linfa-clustering, k-means++), DBSCAN and Ward
//! agglomerative clustering (kodama) on the scaled numeric features, with segments named
//! and described by a deterministic rule from their members' profile.
//!
//! DBSCAN and agglomerative clustering are quadratic, so they run on a seeded sample
//! (`sample_size`, default 5,000 and 3,000 users) and every other user joins the nearest
//! segment centre (DBSCAN: only within the cluster's radius, otherwise noise).
//!
//! Every long step can be interrupted (see `work`): k-means runs one linfa iteration per
//! call, continuing from the previous centres; distances, silhouettes, the DBSCAN
//! neighbourhoods and the knee are computed in chunks on the pool. kodama's linkage has
//! no hook, so its sample is capped at `MAX_LINKAGE_SAMPLE` users, which it links in
//! under half a second (benches/README.md). DBSCAN is ours rather than linfa's because
//! it reuses those chunked neighbourhood queries and so can be interrupted.

use linfa::traits::Fit;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::frame::Frame;
use crate::preprocess::{PreprocessOptions, Preprocessor};
use crate::work::{try_filled, Work};
use crate::Error;

/// The largest sample kodama's Ward linkage may get: it cannot be interrupted, and at
/// this size it finishes in under half a second on the reference machine.
pub const MAX_LINKAGE_SAMPLE: usize = 5_000;
/// Rows per chunk of the quadratic loops (distances, silhouette, neighbourhoods).
const ROW_CHUNK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegAlgorithm {
    KMeans,
    Dbscan,
    Agglomerative,
}

impl SegAlgorithm {
    pub fn parse(s: &str) -> Result<SegAlgorithm, Error> {
        match s {
            "kmeans" => Ok(SegAlgorithm::KMeans),
            "dbscan" => Ok(SegAlgorithm::Dbscan),
            "agglomerative" => Ok(SegAlgorithm::Agglomerative),
            other => Err(bad(
                "algorithm",
                format!("unknown algorithm \"{other}\"; use kmeans, dbscan or agglomerative"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SegAlgorithm::KMeans => "kmeans",
            SegAlgorithm::Dbscan => "dbscan",
            SegAlgorithm::Agglomerative => "agglomerative",
        }
    }
}

/// What the clustering sees of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// Every numeric feature (scaled, skewed ones logged).
    Behaviour,
    /// Recency, frequency and monetary value plus tenure, logged and scaled: the classic
    /// customer-value picture, four inputs that separate well.
    Rfm,
}

impl View {
    pub const ALL: [View; 2] = [View::Rfm, View::Behaviour];

    pub fn parse(s: &str) -> Result<View, Error> {
        match s {
            "rfm" => Ok(View::Rfm),
            "behaviour" | "behavior" => Ok(View::Behaviour),
            other => Err(bad(
                "view",
                format!("unknown view \"{other}\"; use rfm or behaviour (leave it out to keep the one that separates better)"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            View::Behaviour => "behaviour",
            View::Rfm => "rfm",
        }
    }
}

/// The features the RFM view reads, and the inputs it makes of them.
const RFM_SOURCES: [&str; 4] = [
    "days_since_last_activity",
    "days_since_registration",
    "purchase_count",
    "total_spent",
];
const RFM_INPUTS: [&str; 4] = ["recency_days", "frequency", "monetary", "tenure_days"];

/// How a view turns a row of numeric features into clustering inputs; stored with the
/// segmentation so that `assign` sees what the clustering saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub view: View,
    /// Positions of the view's source features in the numeric row (RFM_SOURCES order).
    positions: Vec<usize>,
}

impl Inputs {
    /// Every numeric feature as it is: what segmentations stored before views existed.
    pub fn all_features() -> Inputs {
        Inputs {
            view: View::Behaviour,
            positions: Vec::new(),
        }
    }

    pub fn new(view: View, numeric_names: &[String]) -> Result<Inputs, Error> {
        let positions = match view {
            View::Behaviour => Vec::new(),
            View::Rfm => RFM_SOURCES
                .iter()
                .map(|s| {
                    numeric_names.iter().position(|n| n == s).ok_or_else(|| {
                        Error::Internal(format!("the RFM view needs the feature {s}"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Inputs { view, positions })
    }

    /// The view's inputs of one user. RFM: log(1 + days) since the last activity (a user
    /// never active counts as inactive since registration), log(1 + purchases), log(1 +
    /// spend) (no purchase: 0) and days since registration.
    pub fn row(&self, numeric: &[f64]) -> Vec<f64> {
        match self.view {
            View::Behaviour => numeric.to_vec(),
            View::Rfm => {
                let at = |i: usize| {
                    self.positions
                        .get(i)
                        .and_then(|&p| numeric.get(p))
                        .copied()
                        .unwrap_or(f64::NAN)
                };
                let or = |v: f64, d: f64| if v.is_finite() { v } else { d };
                let tenure = or(at(1), 0.0).max(0.0);
                vec![
                    or(at(0), tenure).max(0.0).ln_1p(),
                    or(at(2), 0.0).max(0.0).ln_1p(),
                    or(at(3), 0.0).max(0.0).ln_1p(),
                    tenure,
                ]
            }
        }
    }

    /// The inputs of every row of `frame`, as a numeric frame.
    pub fn frame(&self, frame: &Frame) -> Frame {
        let numeric_names: Vec<String> = match self.view {
            View::Behaviour => frame.numeric_names.clone(),
            View::Rfm => RFM_INPUTS.iter().map(|s| s.to_string()).collect(),
        };
        let numeric = match self.view {
            View::Behaviour => frame.numeric.clone(),
            View::Rfm => (0..frame.rows)
                .flat_map(|i| self.row(frame.numeric_row(i)))
                .collect(),
        };
        Frame {
            numeric_names,
            categorical_names: Vec::new(),
            numeric,
            categorical: Vec::new(),
            rows: frame.rows,
        }
    }
}

fn bad(name: &'static str, message: String) -> Error {
    Error::InvalidParameter { name, message }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegParams {
    pub algorithm: SegAlgorithm,
    /// None: both views are clustered and the one with the higher silhouette kept.
    pub view: Option<View>,
    pub k: Option<usize>,
    pub eps: Option<f64>,
    pub min_points: usize,
    pub pca: Option<usize>,
    pub sample_size: usize,
    pub silhouette_sample: usize,
    /// Users the preprocessing and the clustering are fitted on (a seeded sample of the
    /// feature store); every user is then placed from the fitted centres.
    pub fit_sample: usize,
    pub seed: u64,
}

impl SegParams {
    /// Parses `params` and checks `k` against the number of users.
    pub fn from_json(
        algorithm: SegAlgorithm,
        k: Option<i64>,
        params: &Value,
        n_users: usize,
    ) -> Result<SegParams, Error> {
        let empty = Map::new();
        let obj = match params {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err(bad("params", "params must be a JSON object".into())),
        };
        let allowed = [
            "view",
            "eps",
            "min_points",
            "pca",
            "sample_size",
            "silhouette_sample",
            "fit_sample",
            "seed",
        ];
        if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(
                "params",
                format!(
                    "unknown parameter \"{key}\"; allowed: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let int = |name: &'static str, lo: i64, hi: i64| -> Result<Option<i64>, Error> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let n = v.as_i64().ok_or_else(|| {
                        bad(name, format!("{name} must be a whole number, got {v}"))
                    })?;
                    if n < lo || n > hi {
                        return Err(bad(
                            name,
                            format!("{name} must be between {lo} and {hi}, got {n}"),
                        ));
                    }
                    Ok(Some(n))
                }
            }
        };
        if n_users < 2 {
            return Err(Error::NotEnoughData(format!(
                "{n_users} user(s) with features; segmentation needs at least 2"
            )));
        }
        let k = match k {
            None => None,
            Some(k) if k < 2 || k as usize > n_users || k > 100 => {
                return Err(bad(
                    "k",
                    format!(
                        "k must be between 2 and min(100, number of users = {n_users}), got {k}"
                    ),
                ))
            }
            Some(k) => Some(k as usize),
        };
        let eps = match obj.get("eps") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let e = v
                    .as_f64()
                    .ok_or_else(|| bad("eps", format!("eps must be a number, got {v}")))?;
                if !(e > 0.0 && e.is_finite()) {
                    return Err(bad(
                        "eps",
                        format!("eps must be a positive distance, got {e}"),
                    ));
                }
                Some(e)
            }
        };
        let default_sample = if algorithm == SegAlgorithm::Agglomerative {
            3000
        } else {
            5000
        };
        let view = match obj.get("view") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(View::parse(v)?),
            Some(v) => {
                return Err(bad(
                    "view",
                    format!("view must be \"rfm\" or \"behaviour\", got {v}"),
                ))
            }
        };
        Ok(SegParams {
            algorithm,
            view,
            k,
            eps,
            min_points: int("min_points", 1, 10_000)?.unwrap_or(10) as usize,
            pca: int("pca", 1, 100)?.map(|v| v as usize),
            sample_size: int(
                "sample_size",
                100,
                if algorithm == SegAlgorithm::Agglomerative {
                    MAX_LINKAGE_SAMPLE as i64
                } else {
                    20_000
                },
            )?
            .unwrap_or(default_sample) as usize,
            silhouette_sample: int("silhouette_sample", 100, 20_000)?.unwrap_or(2000) as usize,
            fit_sample: int("fit_sample", 100, MAX_FIT_SAMPLE as i64)?
                .unwrap_or(DEFAULT_FIT_SAMPLE as i64) as usize,
            seed: int("seed", 0, i64::MAX)?.unwrap_or(42) as u64,
        })
    }
}

/// Users a segmentation is fitted on unless `fit_sample` says otherwise: many more than
/// the 20,000 k-means chooses k on, and their features and preprocessed copies take about
/// 200 MB.
pub const DEFAULT_FIT_SAMPLE: usize = 100_000;
/// The largest `fit_sample` (the memory cap is checked for the size asked: a million
/// users need about 2 GB, just over the default `max_memory_mb`).
pub const MAX_FIT_SAMPLE: usize = 1_000_000;

/// The raw features a segment's profile and name are read from.
pub const PROFILE: [&str; 6] = [
    "days_since_last_activity",
    "purchase_count",
    "total_spent",
    "days_since_registration",
    "product_views_total",
    "price_level_vs_category",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: usize,
    pub name: String,
    pub description: String,
    pub size: usize,
    pub share: f64,
    /// Mean of each PROFILE feature over the members (NaN ignored).
    pub profile: Vec<f64>,
    pub noise: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub silhouette: f64,
    pub silhouette_sample: usize,
    pub inertia: f64,
    pub davies_bouldin: f64,
    pub sizes: Vec<usize>,
    /// (k, silhouette) of each k tried when k was chosen.
    pub k_scores: Option<Vec<(usize, f64)>>,
    pub eps: Option<f64>,
    /// Users the quadratic algorithms clustered before the rest joined them.
    pub clustered_sample: usize,
}

/// A stored segmentation: how to place a user, and what the segments are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segmentation {
    pub algorithm: SegAlgorithm,
    /// The view clustered and how it reads a user's features.
    pub inputs: Inputs,
    /// The silhouette of each view tried when the view was chosen.
    pub view_silhouettes: Vec<(View, f64)>,
    pub preprocessor: Preprocessor,
    /// Centres of the non-noise segments, in the preprocessed space, by segment id.
    pub centres: Vec<Vec<f64>>,
    /// DBSCAN: a user farther than this from every centre is noise.
    pub radius: Option<Vec<f64>>,
    pub segments: Vec<Segment>,
    pub quality: Quality,
    /// Population means of the PROFILE features (the naming rule compares to these).
    pub population: Vec<f64>,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest-centre rule every assignment uses: the nearest centre and the distance to
/// it, or None for the centre when a radius is given and the row lies outside it (DBSCAN
/// noise).
fn nearest_centre(x: &[f64], centres: &[Vec<f64>], radius: Option<&[f64]>) -> (Option<usize>, f64) {
    let (best, d2) = centres
        .iter()
        .enumerate()
        .map(|(i, c)| (i, dist2(x, c)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY));
    let d = d2.sqrt();
    match radius {
        Some(r) if d > r.get(best).copied().unwrap_or(f64::INFINITY) => (None, d),
        _ => (Some(best), d),
    }
}

impl Segmentation {
    /// The segment and the distance to its centre for one preprocessed row.
    /// Outside every radius: Outliers, or the nearest segment when there is no Outliers
    /// segment (nobody was outside when the segmentation was made).
    fn place(&self, x: &[f64]) -> (usize, f64) {
        let noise = self.segments.iter().find(|s| s.noise).map(|s| s.id);
        match (
            nearest_centre(x, &self.centres, self.radius.as_deref()),
            noise,
        ) {
            ((Some(c), d), _) => (c, d),
            ((None, d), Some(z)) => (z, d),
            ((None, _), None) => {
                let (c, d) = nearest_centre(x, &self.centres, None);
                (c.unwrap_or(0), d)
            }
        }
    }

    /// Assigns one user from raw features, without re-clustering.
    pub fn assign(&self, numeric: &[f64], categorical: &[Option<String>]) -> (usize, f64) {
        self.place(
            &self
                .preprocessor
                .transform_row(&self.inputs.row(numeric), categorical),
        )
    }

    /// Places every row of `frame` (raw features) as [`Segmentation::assign`] places one,
    /// preprocessing the rows together as the fit did.
    /// A user outside every radius goes to [`Segmentation::outlier_slot`].
    pub fn place_all(&self, frame: &Frame) -> Vec<(usize, f64)> {
        let x = self.preprocessor.transform(&self.inputs.frame(frame));
        let d = self.preprocessor.n_outputs();
        let outliers = self.outlier_slot().unwrap_or(0);
        (0..frame.rows)
            .map(|i| {
                match nearest_centre(
                    &x[i * d..(i + 1) * d],
                    &self.centres,
                    self.radius.as_deref(),
                ) {
                    (Some(c), dist) => (c, dist),
                    (None, dist) => (outliers, dist),
                }
            })
            .collect()
    }

    /// Where [`Segmentation::place_all`] puts a user outside every radius (DBSCAN): the
    /// Outliers segment, or, when the sample it was fitted on had none, the slot after
    /// the last segment, which [`Segmentation::recount`] makes one if anybody lands there.
    pub fn outlier_slot(&self) -> Option<usize> {
        self.radius.as_ref()?;
        Some(
            self.segments
                .iter()
                .position(|s| s.noise)
                .unwrap_or(self.segments.len()),
        )
    }

    /// The groups [`Segmentation::place_all`] places users in: the segments, and the
    /// outlier slot when it is not one of them.
    pub fn groups(&self) -> usize {
        self.segments.len() + usize::from(self.outlier_slot() == Some(self.segments.len()))
    }

    /// The segments as every user placed makes them (a segmentation is fitted on a
    /// sample): sizes, shares, profiles and names from `tally`, the segments ordered by
    /// size again (largest first, Outliers last), the population's means and the inertia
    /// over all users. Returns the new id of each segment, by its old id.
    /// An outlier slot nobody landed in gets no segment (its new id is `usize::MAX`).
    pub fn recount(&mut self, tally: &Tally) -> Vec<usize> {
        let noise = tally.noise;
        let mut order: Vec<usize> = (0..tally.sizes.len())
            .filter(|&s| Some(s) != noise)
            .collect();
        order.sort_by(|&a, &b| tally.sizes[b].cmp(&tally.sizes[a]).then(a.cmp(&b)));
        order.extend(noise.filter(|&z| z < self.segments.len() || tally.sizes[z] > 0));
        let mut new_id = vec![usize::MAX; tally.sizes.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new;
        }
        let mean = |&(sum, count): &(f64, usize)| {
            if count == 0 {
                f64::NAN
            } else {
                sum / count as f64
            }
        };
        self.population = tally.population.iter().map(mean).collect();
        let described = order
            .iter()
            .map(|&old| {
                (
                    tally.sums[old].iter().map(mean).collect(),
                    tally.sizes[old],
                    tally.sizes[old] as f64 / tally.rows.max(1) as f64,
                    Some(old) == noise,
                )
            })
            .collect();
        self.segments = describe(described, &self.population);
        let kept: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&c| Some(c) != noise)
            .collect();
        self.centres = kept.iter().map(|&c| self.centres[c].clone()).collect();
        self.radius = self
            .radius
            .take()
            .map(|r| kept.iter().map(|&c| r[c]).collect());
        self.quality.sizes = self.segments.iter().map(|s| s.size).collect();
        self.quality.inertia = tally.inertia;
        new_id
    }
}

/// Running counts over every user a segmentation places: each segment's size and the
/// sums of its members' PROFILE features, the population's sums, and the inertia. Rows
/// are added in order, one at a time, so that a shop whose users all fit in the fitting
/// sample gets the very figures the fit computed.
#[derive(Debug, Clone)]
pub struct Tally {
    columns: Vec<Option<usize>>,
    noise: Option<usize>,
    sizes: Vec<usize>,
    /// Per segment, per PROFILE feature: the sum and count of the finite values.
    sums: Vec<Vec<(f64, usize)>>,
    population: Vec<(f64, usize)>,
    inertia: f64,
    rows: usize,
}

impl Tally {
    /// Empty counts for the segments of `seg`, over frames with these numeric columns.
    pub fn new(seg: &Segmentation, numeric_names: &[String]) -> Tally {
        let groups = seg.groups();
        Tally {
            columns: PROFILE
                .iter()
                .map(|p| numeric_names.iter().position(|n| n == p))
                .collect(),
            noise: seg.outlier_slot(),
            sizes: vec![0; groups],
            sums: vec![vec![(0.0, 0); PROFILE.len()]; groups],
            population: vec![(0.0, 0); PROFILE.len()],
            inertia: 0.0,
            rows: 0,
        }
    }

    /// Counts the rows of `frame`, placed by [`Segmentation::place_all`].
    pub fn add(&mut self, frame: &Frame, placed: &[(usize, f64)]) {
        for (i, &(segment, distance)) in placed.iter().enumerate() {
            let row = frame.numeric_row(i);
            for (j, column) in self.columns.iter().enumerate() {
                let Some(v) = column.map(|c| row[c]).filter(|v| v.is_finite()) else {
                    continue;
                };
                self.population[j].0 += v;
                self.population[j].1 += 1;
                self.sums[segment][j].0 += v;
                self.sums[segment][j].1 += 1;
            }
            self.sizes[segment] += 1;
            if Some(segment) != self.noise {
                self.inertia += distance * distance;
            }
            self.rows += 1;
        }
    }

    /// Users counted.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Segments numbered in order from (profile, size, share, noise), named by
/// [`name_segments`].
fn describe(described: Vec<(Vec<f64>, usize, f64, bool)>, population: &[f64]) -> Vec<Segment> {
    let names = name_segments(&described, population);
    described
        .into_iter()
        .zip(names)
        .enumerate()
        .map(
            |(id, ((profile, size, share, noise), (name, description)))| Segment {
                id,
                name,
                description,
                size,
                share,
                profile,
                noise,
            },
        )
        .collect()
}

/// The naming rule: compares a segment's profile with the population's, in order:
/// Outliers (DBSCAN noise), Champions, Promising new, At risk, Hibernating, Bargain
/// hunters, Loyal, Window shoppers, Needs attention. Returns (name, description).
pub fn name_segment(
    profile: &[f64],
    population: &[f64],
    size: usize,
    share: f64,
    noise: bool,
) -> (String, String) {
    let [r, f, m, age, views, price] =
        [0, 1, 2, 3, 4, 5].map(|i| profile.get(i).copied().unwrap_or(f64::NAN));
    let [rp, fp, mp, agep, viewsp, _] =
        [0, 1, 2, 3, 4, 5].map(|i| population.get(i).copied().unwrap_or(f64::NAN));
    let name = if noise {
        "Outliers"
    } else if r <= 0.5 * rp && f >= 1.5 * fp && m >= 1.5 * mp {
        "Champions"
    } else if age <= 0.5 * agep && r <= rp {
        "Promising new"
    } else if r >= 1.5 * rp && m >= mp {
        "At risk"
    } else if r >= 1.5 * rp {
        "Hibernating"
    } else if price <= 0.9 && f >= 0.75 * fp {
        "Bargain hunters"
    } else if f >= fp && r <= rp {
        "Loyal"
    } else if f <= 0.25 * fp || (views >= viewsp && f <= 0.5 * fp) {
        "Window shoppers"
    } else {
        "Needs attention"
    };
    let mut description = format!(
        "{size} users ({:.1}%): last active {r:.1} days ago on average (all users {rp:.1}); {f:.1} purchases and {m:.0} spent \
         (all users {fp:.1} and {mp:.0}); registered {age:.0} days ago; {views:.0} product views; price level {price:.2} of the category mean.",
        share * 100.0
    );
    if name == "Needs attention" {
        let below: Vec<&str> = [
            (r > rp, "longer since the last visit"),
            (f < fp, "fewer purchases"),
            (m < mp, "less spend"),
            (views < viewsp, "fewer product views"),
        ]
        .iter()
        .filter(|(is, _)| *is)
        .map(|(_, what)| *what)
        .collect();
        description.push_str(&if below.is_empty() {
            " Close to the average user on every count; no stronger rule fits.".to_string()
        } else {
            format!(" Below the average user: {}.", below.join(", "))
        });
    }
    (name.to_string(), description)
}

/// Names every segment, in order (largest first), by `name_segment`. A segment whose
/// base name an earlier one already took gets the more specific name its profile fits
/// most strongly and no segment has yet: by price level (Bargain hunters, Premium
/// buyers), tenure (Promising new, Long-standing) or recency (Recently active,
/// Hibernating); only when none fits or all are taken is the base name numbered.
/// `segments` holds (profile, size, share, noise).
pub fn name_segments(
    segments: &[(Vec<f64>, usize, f64, bool)],
    population: &[f64],
) -> Vec<(String, String)> {
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    let mut taken: std::collections::HashSet<String> = Default::default();
    let mut numbered: std::collections::HashMap<String, usize> = Default::default();
    let mut out = Vec::with_capacity(segments.len());
    for (profile, size, share, noise) in segments {
        let (base, description) = name_segment(profile, population, *size, *share, *noise);
        let mut name = base.clone();
        if taken.contains(&base) && !noise {
            // (name, strength, least strength): how far the profile is from the average
            // user on that count, in log ratio; a trait counts from 10% off (price level)
            // or 30% off (tenure, recency)
            let ratio = |i: usize| (at(profile, i) / at(population, i)).ln();
            let price = at(profile, 5).ln();
            let (slight, clear) = (1.1f64.ln(), 1.3f64.ln());
            let mut specific: Vec<(&str, f64)> = [
                ("Bargain hunters", -price, slight),
                ("Premium buyers", price, slight),
                ("Promising new", -ratio(3), clear),
                ("Long-standing", ratio(3), clear),
                ("Recently active", -ratio(0), clear),
                ("Hibernating", ratio(0), clear),
            ]
            .into_iter()
            .filter(|(n, strength, least)| {
                strength.is_finite() && strength >= least && !taken.contains(*n)
            })
            .map(|(n, strength, _)| (n, strength))
            .collect();
            specific.sort_by(|a, b| b.1.total_cmp(&a.1));
            name = match specific.first() {
                Some((n, _)) => n.to_string(),
                None => {
                    let k = numbered.entry(base.clone()).or_insert(1);
                    *k += 1;
                    format!("{base} {k}")
                }
            };
        }
        taken.insert(name.clone());
        out.push((name, description));
    }
    out
}

fn column_means(frame: &Frame, rows: &[usize], cols: &[Option<usize>]) -> Vec<f64> {
    cols.iter()
        .map(|c| {
            let Some(j) = c else { return f64::NAN };
            let vals: Vec<f64> = rows
                .iter()
                .map(|&i| frame.numeric_row(i)[*j])
                .filter(|v| v.is_finite())
                .collect();
            if vals.is_empty() {
                f64::NAN
            } else {
                vals.iter().sum::<f64>() / vals.len() as f64
            }
        })
        .collect()
}

/// The sorted positions of a seeded sample of `size` of `0..n` (all of them when `n` is
/// not larger).
pub fn seeded_sample(n: usize, size: usize, seed: u64) -> Vec<usize> {
    if n <= size {
        return (0..n).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = sample(&mut rng, n, size).into_vec();
    idx.sort_unstable();
    idx
}

fn array(x: &[f64], rows: &[usize], d: usize) -> Result<ndarray::Array2<f64>, Error> {
    let data: Vec<f64> = rows
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect();
    ndarray::Array2::from_shape_vec((rows.len(), d), data)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// k-means with k-means++ starts (three runs, the lowest inertia kept), one linfa
/// iteration per call so that an interrupt is seen between iterations.
fn kmeans(
    work: &Work,
    x: &[f64],
    rows: &[usize],
    d: usize,
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<f64>>, Error> {
    use linfa_clustering::{KMeans, KMeansInit};
    const RUNS: usize = 3;
    const MAX_ITERATIONS: usize = 100;
    const TOLERANCE: f64 = 1e-4;
    work.reserve("k-means", rows.len() * d * 8 * 2)?;
    let records = array(x, rows, d)?;
    let dataset = linfa::DatasetBase::from(records.view());
    let mut rng = rand_xoshiro::Xoshiro256Plus::seed_from_u64(seed);
    let mut best: Option<(f64, ndarray::Array2<f64>)> = None;
    for _ in 0..RUNS {
        let mut centroids: Option<ndarray::Array2<f64>> = None;
        let mut inertia = f64::INFINITY;
        for _ in 0..MAX_ITERATIONS {
            work.checkpoint()?;
            let init = match &centroids {
                None => KMeansInit::KMeansPlusPlus,
                Some(c) => KMeansInit::Precomputed(c.clone()),
            };
            let params = KMeans::params_with_rng(k, rng.clone())
                .init_method(init)
                .n_runs(1)
                .max_n_iterations(1)
                .tolerance(TOLERANCE);
            let model = work
                .install(|| params.fit(&dataset))
                .map_err(|e| Error::Internal(format!("k-means: {e}")))?;
            // a new stream for the next run's k-means++ start
            rng = rand_xoshiro::Xoshiro256Plus::seed_from_u64(rand::Rng::gen(&mut rng));
            inertia = model.inertia();
            let next = model.centroids().to_owned();
            let moved = centroids.as_ref().map_or(f64::INFINITY, |c| {
                dist2(c.as_slice().unwrap_or(&[]), next.as_slice().unwrap_or(&[])).sqrt()
            });
            centroids = Some(next);
            if moved < TOLERANCE {
                break;
            }
        }
        if let Some(c) = centroids {
            if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
                best = Some((inertia, c));
            }
        }
    }
    let (_, c) = best.ok_or_else(|| Error::Internal("k-means found no centres".into()))?;
    Ok((0..c.nrows()).map(|i| c.row(i).to_vec()).collect())
}

/// Mean silhouette over the rows (labels None are skipped). O(rows^2), in chunks.
pub fn silhouette(
    work: &Work,
    x: &[f64],
    d: usize,
    rows: &[usize],
    labels: &[Option<usize>],
) -> Result<f64, Error> {
    let pts: Vec<(usize, usize)> = rows
        .iter()
        .zip(labels)
        .filter_map(|(&r, l)| l.map(|l| (r, l)))
        .collect();
    let k = pts.iter().map(|p| p.1).max().map_or(0, |m| m + 1);
    if k < 2 {
        return Ok(f64::NAN);
    }
    let parts = work.for_chunks(pts.len(), ROW_CHUNK, |range| {
        let mut total = 0.0;
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for &(i, li) in &pts[range] {
            sum.iter_mut().for_each(|s| *s = 0.0);
            cnt.iter_mut().for_each(|c| *c = 0);
            for &(j, lj) in &pts {
                if i != j {
                    sum[lj] += dist2(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]).sqrt();
                    cnt[lj] += 1;
                }
            }
            if cnt[li] == 0 {
                continue; // a singleton scores 0
            }
            let a = sum[li] / cnt[li] as f64;
            let b = (0..k)
                .filter(|&c| c != li && cnt[c] > 0)
                .map(|c| sum[c] / cnt[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if b.is_finite() {
                total += (b - a) / a.max(b);
            }
        }
        total
    })?;
    Ok(parts.iter().sum::<f64>() / pts.len() as f64)
}

fn davies_bouldin(x: &[f64], d: usize, labels: &[Option<usize>], centres: &[Vec<f64>]) -> f64 {
    let k = centres.len();
    let mut scatter = vec![0.0; k];
    let mut cnt = vec![0usize; k];
    for (i, l) in labels.iter().enumerate() {
        if let Some(l) = l {
            scatter[*l] += dist2(&x[i * d..(i + 1) * d], &centres[*l]).sqrt();
            cnt[*l] += 1;
        }
    }
    let s: Vec<f64> = scatter
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect();
    if k < 2 {
        return f64::NAN;
    }
    (0..k)
        .map(|i| {
            (0..k)
                .filter(|&j| j != i)
                .map(|j| (s[i] + s[j]) / dist2(&centres[i], &centres[j]).sqrt().max(1e-12))
                .fold(0.0, f64::max)
        })
        .sum::<f64>()
        / k as f64
}

/// Ward linkage on the sample, cut into k clusters: labels per sample row.
fn ward_labels(steps: &[kodama::Step<f64>], n: usize, k: usize) -> Vec<usize> {
    // union-find over the first n - k merges
    let mut parent: Vec<usize> = (0..2 * n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for (s, step) in steps.iter().enumerate().take(n.saturating_sub(k)) {
        let new = n + s;
        let (a, b) = (
            find(&mut parent, step.cluster1),
            find(&mut parent, step.cluster2),
        );
        parent[a] = new;
        parent[b] = new;
    }
    let mut ids = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let r = find(&mut parent, i);
            let next = ids.len();
            *ids.entry(r).or_insert(next)
        })
        .collect()
}

fn centres_of(x: &[f64], d: usize, rows: &[usize], labels: &[usize], k: usize) -> Vec<Vec<f64>> {
    let mut sums = vec![vec![0.0; d]; k];
    let mut cnt = vec![0usize; k];
    for (&r, &l) in rows.iter().zip(labels) {
        for (s, v) in sums[l].iter_mut().zip(&x[r * d..(r + 1) * d]) {
            *s += v;
        }
        cnt[l] += 1;
    }
    sums.into_iter()
        .zip(cnt)
        .map(|(s, c)| s.into_iter().map(|v| v / c.max(1) as f64).collect())
        .collect()
}

/// The k-distance "knee": the min_points-th neighbour distance of every sample row,
/// sorted, at the point farthest from the chord between its ends.
pub fn knee_eps(
    work: &Work,
    x: &[f64],
    d: usize,
    rows: &[usize],
    min_points: usize,
) -> Result<f64, Error> {
    let kth = min_points.clamp(1, rows.len().saturating_sub(1).max(1));
    let parts = work.for_chunks(rows.len(), ROW_CHUNK, |range| {
        let mut ds = Vec::with_capacity(rows.len());
        rows[range]
            .iter()
            .map(|&i| {
                ds.clear();
                ds.extend(
                    rows.iter()
                        .filter(|&&j| j != i)
                        .map(|&j| dist2(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d])),
                );
                let idx = (kth - 1).min(ds.len().saturating_sub(1));
                if ds.is_empty() {
                    return 0.0;
                }
                ds.select_nth_unstable_by(idx, f64::total_cmp);
                ds[idx].sqrt()
            })
            .collect::<Vec<f64>>()
    })?;
    let mut kd: Vec<f64> = parts.concat();
    kd.sort_by(f64::total_cmp);
    let n = kd.len();
    if n < 3 {
        return Ok(kd.last().copied().unwrap_or(1.0).max(1e-6));
    }
    let (x0, y0, x1, y1) = (0.0, kd[0], (n - 1) as f64, kd[n - 1]);
    let (dx, dy) = (x1 - x0, y1 - y0);
    let norm = (dx * dx + dy * dy).sqrt().max(1e-12);
    let best = (0..n)
        .max_by(|&a, &b| {
            let da = (dy * a as f64 - dx * kd[a] + x1 * y0 - y1 * x0).abs() / norm;
            let db = (dy * b as f64 - dx * kd[b] + x1 * y0 - y1 * x0).abs() / norm;
            da.total_cmp(&db)
        })
        .unwrap_or(n - 1);
    Ok(kd[best].max(1e-6))
}

/// DBSCAN on the sample `rows`: a row is a core point when at least `min_points` rows
/// (itself included) lie within `eps`; clusters grow from core points through their
/// neighbourhoods; rows reached by no core point are noise (None). Neighbourhoods are
/// computed in chunks, and their memory is checked against the budget as they grow.
pub fn dbscan(
    work: &Work,
    x: &[f64],
    d: usize,
    rows: &[usize],
    eps: f64,
    min_points: usize,
) -> Result<Vec<Option<usize>>, Error> {
    let eps2 = eps * eps;
    let m = rows.len();
    let mut neighbours: Vec<Vec<u32>> = Vec::with_capacity(m);
    let mut bytes = 0usize;
    for start in (0..m).step_by(ROW_CHUNK * work.threads() * 4) {
        let end = (start + ROW_CHUNK * work.threads() * 4).min(m);
        let part = work.for_chunks(end - start, ROW_CHUNK, |range| {
            range
                .map(|a| {
                    let i = rows[start + a];
                    (0..m as u32)
                        .filter(|&b| {
                            let j = rows[b as usize];
                            dist2(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]) <= eps2
                        })
                        .collect::<Vec<u32>>()
                })
                .collect::<Vec<_>>()
        })?;
        for lists in part {
            for l in lists {
                bytes += l.len() * 4 + 24;
                neighbours.push(l);
            }
        }
        work.reserve("DBSCAN's neighbourhoods", bytes)?;
    }
    let core: Vec<bool> = neighbours.iter().map(|n| n.len() >= min_points).collect();
    let mut label: Vec<Option<usize>> = try_filled(m, None)?;
    let mut next = 0;
    let mut queue = Vec::new();
    for seed in 0..m {
        if label[seed].is_some() || !core[seed] {
            continue;
        }
        label[seed] = Some(next);
        queue.push(seed);
        while let Some(p) = queue.pop() {
            for &q in &neighbours[p] {
                let q = q as usize;
                if label[q].is_none() {
                    label[q] = Some(next);
                    if core[q] {
                        queue.push(q);
                    }
                }
            }
        }
        next += 1;
    }
    Ok(label)
}

/// The k of 2..=10 (fewer for tiny samples) whose labels have the highest silhouette on
/// `sil_rows` (2 when none is defined), and the silhouette of every k tried.
fn choose_k(
    work: &Work,
    x: &[f64],
    d: usize,
    sil_rows: &[usize],
    most: usize,
    mut labels_for: impl FnMut(usize) -> Result<Vec<Option<usize>>, Error>,
) -> Result<(usize, Vec<(usize, f64)>), Error> {
    let mut scores = Vec::new();
    for k in 2..=10.min(most.saturating_sub(1)).max(2) {
        let labels = labels_for(k)?;
        scores.push((k, silhouette(work, x, d, sil_rows, &labels)?));
    }
    let best = scores
        .iter()
        .filter(|s| s.1.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(2, |s| s.0);
    Ok((best, scores))
}

/// What a clustering algorithm found on the preprocessed inputs.
struct Clustering {
    /// Centres of the clusters, by cluster id.
    centres: Vec<Vec<f64>>,
    /// DBSCAN: each cluster's radius; a row farther from every centre is noise.
    radius: Option<Vec<f64>>,
    /// (k, silhouette) of each k tried when k was chosen.
    k_scores: Option<Vec<(usize, f64)>>,
    eps: Option<f64>,
    /// Rows the algorithm clustered (the sample of the quadratic ones).
    clustered_sample: usize,
}

/// k-means on every row (k chosen by silhouette on up to 20,000 rows when not given).
fn fit_kmeans(
    work: &Work,
    x: &[f64],
    d: usize,
    n: usize,
    params: &SegParams,
    sil_rows: &[usize],
) -> Result<Clustering, Error> {
    let (k, k_scores) = match params.k {
        Some(k) => (k, None),
        None => {
            let fit_rows = seeded_sample(n, 20_000, params.seed);
            let (k, scores) = choose_k(work, x, d, sil_rows, n, |k| {
                let c = kmeans(work, x, &fit_rows, d, k, params.seed)?;
                Ok(sil_rows
                    .iter()
                    .map(|&i| nearest_centre(&x[i * d..(i + 1) * d], &c, None).0)
                    .collect())
            })?;
            (k, Some(scores))
        }
    };
    let all: Vec<usize> = (0..n).collect();
    Ok(Clustering {
        centres: kmeans(work, x, &all, d, k, params.seed)?,
        radius: None,
        k_scores,
        eps: None,
        clustered_sample: n,
    })
}

/// Ward linkage on a sample, cut into k clusters (chosen by silhouette when not given).
fn fit_agglomerative(
    work: &Work,
    x: &[f64],
    d: usize,
    n: usize,
    params: &SegParams,
) -> Result<Clustering, Error> {
    let rows = seeded_sample(n, params.sample_size, params.seed);
    let m = rows.len();
    // the condensed matrix, and its chunks while they are joined
    work.reserve("Ward linkage", m * m.saturating_sub(1) * 8)?;
    let parts = work.for_chunks(m, ROW_CHUNK, |range| {
        let mut out = Vec::new();
        for a in range {
            let xa = &x[rows[a] * d..(rows[a] + 1) * d];
            out.extend(
                rows[a + 1..]
                    .iter()
                    .map(|&b| dist2(xa, &x[b * d..(b + 1) * d]).sqrt()),
            );
        }
        out
    })?;
    let mut condensed = parts.concat();
    drop(parts);
    work.checkpoint()?;
    let dendrogram = work.install(|| kodama::linkage(&mut condensed, m, kodama::Method::Ward));
    drop(condensed);
    let steps = dendrogram.steps();
    let (k, k_scores) = match params.k {
        Some(k) if k > m => {
            return Err(bad(
                "k",
                format!("k = {k} is more than the {m} sampled users"),
            ));
        }
        Some(k) => (k, None),
        None => {
            let sil_local: Vec<usize> = (0..m)
                .step_by((m / params.silhouette_sample).max(1))
                .collect();
            let sil_global: Vec<usize> = sil_local.iter().map(|&i| rows[i]).collect();
            let (k, scores) = choose_k(work, x, d, &sil_global, m, |k| {
                let labels = ward_labels(steps, m, k);
                Ok(sil_local.iter().map(|&i| Some(labels[i])).collect())
            })?;
            (k, Some(scores))
        }
    };
    let labels = ward_labels(steps, m, k);
    Ok(Clustering {
        centres: centres_of(x, d, &rows, &labels, k),
        radius: None,
        k_scores,
        eps: None,
        clustered_sample: m,
    })
}

/// DBSCAN on a sample (eps from the knee of the k-distance curve when not given); each
/// cluster's centre and radius place every other row.
fn fit_dbscan(
    work: &Work,
    x: &[f64],
    d: usize,
    n: usize,
    params: &SegParams,
) -> Result<Clustering, Error> {
    let rows = seeded_sample(n, params.sample_size, params.seed);
    let eps = match params.eps {
        Some(e) => e,
        None => knee_eps(work, x, d, &rows, params.min_points)?,
    };
    let labels = dbscan(work, x, d, &rows, eps, params.min_points)?;
    let k = labels.iter().flatten().max().map_or(0, |m| m + 1);
    if k == 0 {
        return Err(Error::NotEnoughData(format!(
            "DBSCAN found no cluster with eps = {eps:.4} and min_points = {}; pass a larger eps or a smaller min_points",
            params.min_points
        )));
    }
    let (clustered, lab): (Vec<usize>, Vec<usize>) = rows
        .iter()
        .zip(labels.iter())
        .filter_map(|(&r, l)| l.map(|l| (r, l)))
        .unzip();
    let centres = centres_of(x, d, &clustered, &lab, k);
    let mut radius = vec![0.0f64; k];
    for (&i, &l) in clustered.iter().zip(&lab) {
        radius[l] = radius[l].max(dist2(&x[i * d..(i + 1) * d], &centres[l]).sqrt());
    }
    Ok(Clustering {
        centres,
        radius: Some(radius),
        k_scores: None,
        eps: Some(eps),
        clustered_sample: rows.len(),
    })
}

/// Memory segmenting `n` users with `w` numeric features needs: the features as read,
/// their numeric copy, the preprocessed inputs (at most twice as many columns, with
/// missing flags) and the assignments.
pub fn segment_bytes(n: usize, w: usize) -> usize {
    n * (w * 8 * 4 + 64)
}

/// Clusters every row of `frame` (numeric features only) in the view the parameters
/// name, or in each view, keeping the one with the higher silhouette. Returns the
/// segmentation and, per row, (segment id, distance to the segment centre).
pub fn segment(
    work: &Work,
    frame: &Frame,
    params: &SegParams,
) -> Result<(Segmentation, Vec<(usize, f64)>), Error> {
    work.reserve(
        "segmenting the users",
        segment_bytes(frame.rows, frame.numeric_names.len()),
    )?;
    let views = match params.view {
        Some(v) => vec![v],
        None => View::ALL.to_vec(),
    };
    let mut tried = Vec::new();
    let mut best: Option<(Segmentation, Vec<(usize, f64)>)> = None;
    let mut failure = None;
    for view in views {
        let (seg, rows) = match segment_view(work, frame, params, view) {
            Ok(r) => r,
            // when choosing, a view in which the algorithm finds nothing is passed over
            Err(Error::NotEnoughData(m)) if params.view.is_none() => {
                tried.push((view, f64::NAN));
                failure = Some(Error::NotEnoughData(m));
                continue;
            }
            Err(e) => return Err(e),
        };
        let sil = seg.quality.silhouette;
        tried.push((view, sil));
        let better = best.as_ref().is_none_or(|(b, _)| {
            sil.is_finite() && (b.quality.silhouette.is_nan() || sil > b.quality.silhouette)
        });
        if better {
            best = Some((seg, rows));
        }
    }
    let (mut seg, rows) = best.ok_or_else(|| {
        failure.unwrap_or_else(|| Error::Internal("no view was clustered".into()))
    })?;
    seg.view_silhouettes = tried;
    Ok((seg, rows))
}

/// [`segment`] in one view.
fn segment_view(
    work: &Work,
    frame: &Frame,
    params: &SegParams,
    view: View,
) -> Result<(Segmentation, Vec<(usize, f64)>), Error> {
    let n = frame.rows;
    let inputs = Inputs::new(view, &frame.numeric_names)?;
    let view_frame = inputs.frame(frame);
    let options = PreprocessOptions {
        // the RFM inputs are logged already
        log_transform: view == View::Behaviour,
        impute: true,
        scale: true,
        one_hot: false,
        max_categories: 0,
        // the four RFM inputs are all kept; among all features, near-copies are dropped
        max_correlation: (view == View::Behaviour).then_some(0.95),
        pca_components: params.pca,
    };
    work.checkpoint()?;
    let preprocessor = Preprocessor::fit(&view_frame, &options)?;
    work.checkpoint()?;
    let x = work.install(|| preprocessor.transform(&view_frame));
    drop(view_frame);
    let d = preprocessor.n_outputs();
    let all: Vec<usize> = (0..n).collect();
    let sil_rows = seeded_sample(n, params.silhouette_sample, params.seed ^ 0x5117);
    let Clustering {
        centres,
        radius,
        k_scores,
        eps: eps_used,
        clustered_sample,
    } = match params.algorithm {
        SegAlgorithm::KMeans => fit_kmeans(work, &x, d, n, params, &sil_rows)?,
        SegAlgorithm::Agglomerative => fit_agglomerative(work, &x, d, n, params)?,
        SegAlgorithm::Dbscan => fit_dbscan(work, &x, d, n, params)?,
    };

    // place every row, then order segments by size (largest first), noise last
    let k = centres.len();
    let noise_id = radius.as_ref().map(|_| k);
    let mut raw: Vec<(usize, f64)> = work
        .for_chunks(n, 4096, |range| {
            range
                .map(|i| {
                    match nearest_centre(&x[i * d..(i + 1) * d], &centres, radius.as_deref()) {
                        (Some(c), dist) => (c, dist),
                        (None, dist) => (noise_id.unwrap_or(k), dist),
                    }
                })
                .collect::<Vec<_>>()
        })?
        .concat();
    let groups = k + usize::from(noise_id.is_some());
    let mut sizes = vec![0usize; groups];
    for (c, _) in &raw {
        sizes[*c] += 1;
    }
    let mut order: Vec<usize> = (0..k).filter(|&c| sizes[c] > 0).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    if let Some(noise) = noise_id.filter(|&z| sizes[z] > 0) {
        order.push(noise);
    }
    let mut new_id = vec![usize::MAX; groups];
    for (new, &old) in order.iter().enumerate() {
        new_id[old] = new;
    }
    for r in raw.iter_mut() {
        r.0 = new_id[r.0];
    }
    let centres: Vec<Vec<f64>> = order
        .iter()
        .filter(|&&c| Some(c) != noise_id)
        .map(|&c| centres[c].clone())
        .collect();
    let radius = radius.map(|r| {
        order
            .iter()
            .filter(|&&c| Some(c) != noise_id)
            .map(|&c| r[c])
            .collect()
    });
    let noise_new = noise_id.and_then(|z| (new_id[z] != usize::MAX).then_some(new_id[z]));

    let profile_cols: Vec<Option<usize>> = PROFILE
        .iter()
        .map(|p| frame.numeric_names.iter().position(|n| n == p))
        .collect();
    let population = column_means(frame, &all, &profile_cols);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for (i, r) in raw.iter().enumerate() {
        members[r.0].push(i);
    }
    let described: Vec<(Vec<f64>, usize, f64, bool)> = members
        .iter()
        .enumerate()
        .map(|(id, rows)| {
            (
                column_means(frame, rows, &profile_cols),
                rows.len(),
                rows.len() as f64 / n as f64,
                Some(id) == noise_new,
            )
        })
        .collect();
    let segments = describe(described, &population);

    let labels: Vec<Option<usize>> = raw
        .iter()
        .map(|r| (Some(r.0) != noise_new).then_some(r.0))
        .collect();
    let sil_labels: Vec<Option<usize>> = sil_rows.iter().map(|&i| labels[i]).collect();
    let quality = Quality {
        silhouette: silhouette(work, &x, d, &sil_rows, &sil_labels)?,
        silhouette_sample: sil_rows.len(),
        inertia: raw
            .iter()
            .zip(&labels)
            .filter(|(_, l)| l.is_some())
            .map(|(r, _)| r.1 * r.1)
            .sum(),
        davies_bouldin: davies_bouldin(&x, d, &labels, &centres),
        sizes: segments.iter().map(|s| s.size).collect(),
        k_scores,
        eps: eps_used,
        clustered_sample,
    };
    Ok((
        Segmentation {
            algorithm: params.algorithm,
            inputs,
            view_silhouettes: Vec::new(),
            preprocessor,
            centres,
            radius,
            segments,
            quality,
            population,
        },
        raw,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn blobs(per: usize, seed: u64) -> Frame {
        blobs_of([per; 3], seed)
    }

    fn blobs_of(sizes: [usize; 3], seed: u64) -> Frame {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut f = Frame {
            numeric_names: PROFILE
                .iter()
                .map(|s| s.to_string())
                .chain(["noise".to_string()])
                .collect(),
            ..Frame::default()
        };
        // three groups: champions, hibernating, new
        let centres = [
            [2.0, 20.0, 2000.0, 150.0, 80.0, 1.0],
            [80.0, 1.0, 50.0, 160.0, 10.0, 1.0],
            [3.0, 0.5, 20.0, 10.0, 15.0, 1.0],
        ];
        for (c, per) in centres.into_iter().zip(sizes) {
            for _ in 0..per {
                for v in c {
                    f.numeric.push(v * rng.gen_range(0.9..1.1));
                }
                f.numeric.push(rng.gen_range(0.0..1.0));
                f.rows += 1;
            }
        }
        f
    }

    fn params(algorithm: SegAlgorithm, k: Option<i64>, n: usize) -> SegParams {
        SegParams::from_json(algorithm, k, &Value::Null, n).unwrap()
    }

    #[test]
    fn every_algorithm_finds_the_three_groups() {
        let f = blobs(60, 1);
        for algo in [
            SegAlgorithm::KMeans,
            SegAlgorithm::Agglomerative,
            SegAlgorithm::Dbscan,
        ] {
            let (s, rows) = segment(&Work::unbounded(2), &f, &params(algo, None, f.rows)).unwrap();
            let real: Vec<&Segment> = s.segments.iter().filter(|x| !x.noise).collect();
            assert_eq!(real.len(), 3, "{algo:?}: {:?}", s.quality);
            assert!(
                s.quality.silhouette > 0.3,
                "{algo:?} silhouette {}",
                s.quality.silhouette
            );
            // every group lands in one segment
            for g in 0..3 {
                let ids: std::collections::HashSet<usize> =
                    rows[g * 60..(g + 1) * 60].iter().map(|r| r.0).collect();
                assert!(ids.len() <= 2, "{algo:?} split group {g}: {ids:?}");
            }
            let names: Vec<&str> = real.iter().map(|x| x.name.as_str()).collect();
            assert!(
                names.contains(&"Champions") && names.contains(&"Hibernating"),
                "{algo:?}: {names:?}"
            );
            // a new user is assigned, not re-clustered
            let (seg, _) = s.assign(f.numeric_row(0), &[]);
            assert_eq!(seg, rows[0].0);
        }
    }

    /// What `segment_users()` does: fit, then place and count every user in batches.
    fn placed_in_batches(seg: &mut Segmentation, f: &Frame, batch: usize) -> Vec<(usize, f64)> {
        let mut tally = Tally::new(seg, &f.numeric_names);
        let mut placed = Vec::new();
        for start in (0..f.rows).step_by(batch) {
            let rows: Vec<usize> = (start..(start + batch).min(f.rows)).collect();
            let part = f.select(&rows);
            let p = seg.place_all(&part);
            tally.add(&part, &p);
            placed.extend(p);
        }
        assert_eq!(tally.rows(), f.rows);
        let new_id = seg.recount(&tally);
        placed.iter().map(|&(s, d)| (new_id[s], d)).collect()
    }

    #[test]
    fn counting_every_user_in_batches_gives_the_fit_on_all_of_them() {
        let f = blobs(80, 7);
        for algo in [
            SegAlgorithm::KMeans,
            SegAlgorithm::Agglomerative,
            SegAlgorithm::Dbscan,
        ] {
            let (fitted, rows) =
                segment(&Work::unbounded(2), &f, &params(algo, None, f.rows)).unwrap();
            let mut seg = fitted.clone();
            let placed = placed_in_batches(&mut seg, &f, 37);
            // bit for bit: the same segments, names, profiles, inertia and placements
            assert_eq!(format!("{placed:?}"), format!("{rows:?}"), "{algo:?}");
            assert_eq!(format!("{seg:?}"), format!("{fitted:?}"), "{algo:?}");
        }
    }

    #[test]
    fn a_segmentation_fitted_on_a_sample_counts_every_user() {
        // three groups of 40, 400 and 160: the sample holds a tenth of the users
        let f = blobs_of([40, 400, 160], 11);
        let sample = f.select(&seeded_sample(f.rows, f.rows / 10, 5));
        let p = params(SegAlgorithm::KMeans, Some(3), sample.rows);
        let (mut seg, _) = segment(&Work::unbounded(2), &sample, &p).unwrap();
        let placed = placed_in_batches(&mut seg, &f, 50);
        let mut sizes = vec![0usize; seg.segments.len()];
        for &(s, _) in &placed {
            sizes[s] += 1;
        }
        assert_eq!(seg.quality.sizes, sizes);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), f.rows);
        let shares: f64 = seg.segments.iter().map(|s| s.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        // the population means are over every user, not the sample
        let spent = PROFILE.iter().position(|p| *p == "total_spent").unwrap();
        let column = f
            .numeric_names
            .iter()
            .position(|n| n == "total_spent")
            .unwrap();
        let all: f64 = (0..f.rows).map(|i| f.numeric_row(i)[column]).sum::<f64>() / f.rows as f64;
        assert!((seg.population[spent] - all).abs() < 1e-9 * all.abs().max(1.0));
        // the largest segment is the big group's, and a user is still assigned alone
        let (first, _) = seg.assign(f.numeric_row(40), &[]);
        assert_eq!(first, 0);
        assert_eq!(seg.assign(f.numeric_row(0), &[]).0, placed[0].0);
    }

    #[test]
    fn users_outside_every_radius_become_outliers_when_the_sample_had_none() {
        let sample = blobs(40, 21);
        let p = SegParams::from_json(
            SegAlgorithm::Dbscan,
            None,
            &serde_json::json!({"view": "behaviour", "eps": 3.0, "min_points": 3}),
            sample.rows,
        )
        .unwrap();
        let (mut seg, _) = segment(&Work::unbounded(2), &sample, &p).unwrap();
        assert!(
            !seg.segments.iter().any(|s| s.noise),
            "the sample itself has outliers: {:?}",
            seg.quality
        );
        // every user of the sample, and five far from all of them
        let mut all = sample.clone();
        for k in 0..5 {
            let far = [900.0 + k as f64, 300.0, 90_000.0, 4000.0, 2000.0, 9.0, 0.5];
            all.numeric.extend_from_slice(&far);
            all.rows += 1;
        }
        // without an Outliers segment, a user outside every radius joins the nearest one
        let far = all.numeric_row(all.rows - 1).to_vec();
        let unbounded = Segmentation {
            radius: None,
            ..seg.clone()
        };
        assert_eq!(seg.assign(&far, &[]), unbounded.assign(&far, &[]));
        let placed = placed_in_batches(&mut seg, &all, 50);
        let outliers: Vec<&Segment> = seg.segments.iter().filter(|s| s.noise).collect();
        assert_eq!(outliers.len(), 1, "{:?}", seg.segments);
        assert_eq!(outliers[0].size, 5);
        assert_eq!(outliers[0].id, seg.segments.len() - 1);
        for (i, &(s, _)) in placed.iter().enumerate() {
            assert_eq!(s == outliers[0].id, i >= sample.rows, "row {i}");
            // the stored place is the one a single user's assignment gives
            assert_eq!(seg.assign(all.numeric_row(i), &[]).0, s, "row {i}");
        }
        assert_eq!(seg.quality.sizes.iter().sum::<usize>(), all.rows);
    }

    #[test]
    fn every_algorithm_stops_at_a_cancel_and_refuses_beyond_the_budget() {
        let f = blobs(400, 2);
        for (algo, k) in [
            (SegAlgorithm::KMeans, None),
            (SegAlgorithm::Agglomerative, None),
            (SegAlgorithm::Dbscan, None),
        ] {
            let calls = std::rc::Rc::new(std::cell::Cell::new(0));
            let c = calls.clone();
            let work = Work::new(
                1,
                usize::MAX,
                usize::MAX,
                Box::new(move || {
                    c.set(c.get() + 1);
                    if c.get() > 3 {
                        Err(Error::Cancelled)
                    } else {
                        Ok(())
                    }
                }),
            )
            .unwrap();
            assert_eq!(
                segment(&work, &f, &params(algo, k, f.rows)).map(|_| ()),
                Err(Error::Cancelled),
                "{algo:?}"
            );
            let mut small = Work::unbounded(1);
            small.memory_limit = 1000;
            assert!(matches!(
                segment(&small, &f, &params(algo, k, f.rows)),
                Err(Error::TooLarge { .. })
            ));
        }
        // the linkage sample is capped, since kodama cannot be interrupted
        assert!(SegParams::from_json(
            SegAlgorithm::Agglomerative,
            None,
            &serde_json::json!({"sample_size": MAX_LINKAGE_SAMPLE + 1}),
            100_000
        )
        .is_err());
    }

    #[test]
    fn dbscan_finds_dense_groups_and_leaves_noise() {
        // two tight groups on a line and one far point
        let mut x = Vec::new();
        for i in 0..20 {
            x.push(i as f64 * 0.01);
        }
        for i in 0..20 {
            x.push(10.0 + i as f64 * 0.01);
        }
        x.push(100.0);
        let rows: Vec<usize> = (0..41).collect();
        let labels = dbscan(&Work::unbounded(2), &x, 1, &rows, 0.05, 3).unwrap();
        assert!(labels[..20].iter().all(|l| *l == labels[0] && l.is_some()));
        assert!(labels[20..40]
            .iter()
            .all(|l| *l == labels[20] && l.is_some()));
        assert_ne!(labels[0], labels[20]);
        assert_eq!(labels[40], None);
    }

    #[test]
    fn naming_rule_on_crafted_centres() {
        let pop = [20.0, 4.0, 400.0, 100.0, 50.0, 1.0];
        let name = |p: [f64; 6]| name_segment(&p, &pop, 10, 0.1, false).0;
        assert_eq!(name([5.0, 10.0, 1000.0, 120.0, 60.0, 1.0]), "Champions");
        assert_eq!(name([10.0, 1.0, 50.0, 20.0, 20.0, 1.0]), "Promising new");
        assert_eq!(name([40.0, 5.0, 800.0, 150.0, 50.0, 1.0]), "At risk");
        assert_eq!(name([40.0, 1.0, 50.0, 150.0, 50.0, 1.0]), "Hibernating");
        assert_eq!(
            name([15.0, 4.0, 200.0, 120.0, 50.0, 0.7]),
            "Bargain hunters"
        );
        assert_eq!(name([15.0, 5.0, 450.0, 120.0, 50.0, 1.0]), "Loyal");
        assert_eq!(name([25.0, 1.5, 50.0, 120.0, 90.0, 1.0]), "Window shoppers");
        assert_eq!(name([25.0, 0.5, 20.0, 120.0, 10.0, 1.0]), "Window shoppers");
        assert_eq!(
            name([25.0, 3.0, 300.0, 120.0, 40.0, 1.0]),
            "Needs attention"
        );
        assert_eq!(name_segment(&pop, &pop, 3, 0.01, true).0, "Outliers");
        let (_, d) = name_segment(&[5.0, 10.0, 1000.0, 120.0, 60.0, 1.0], &pop, 10, 0.1, false);
        assert!(
            d.starts_with("10 users (10.0%)") && d.contains("last active 5.0 days ago"),
            "{d}"
        );
    }

    #[test]
    fn duplicate_names_give_way_to_a_more_specific_one() {
        let pop = [20.0, 4.0, 400.0, 100.0, 50.0, 1.0];
        // two segments the rule calls "Needs attention", the smaller one with cheap
        // products: it becomes the bargain hunters, and says what is below average
        let attention = vec![25.0, 3.0, 300.0, 120.0, 40.0, 1.0];
        let cheap = vec![24.0, 2.8, 280.0, 110.0, 45.0, 0.81];
        let plain = vec![23.0, 3.1, 310.0, 100.0, 40.0, 1.0];
        let names = name_segments(
            &[
                (attention.clone(), 30, 0.3, false),
                (cheap, 20, 0.2, false),
                (plain, 10, 0.1, false),
                (pop.to_vec(), 2, 0.02, true),
            ],
            &pop,
        );
        let n: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            n,
            [
                "Needs attention",
                "Bargain hunters",
                "Needs attention 2",
                "Outliers"
            ]
        );
        assert!(
            names[0].1.contains("Below the average user: longer since the last visit, fewer purchases, less spend, fewer product views"),
            "{}",
            names[0].1
        );
        // tenure and recency: the stronger trait names the segment
        let old_timers = vec![15.0, 5.0, 450.0, 200.0, 50.0, 1.0];
        let names = name_segments(
            &[
                (vec![15.0, 5.0, 450.0, 120.0, 50.0, 1.0], 30, 0.3, false),
                (old_timers, 20, 0.2, false),
            ],
            &pop,
        );
        assert_eq!(names[0].0, "Loyal");
        assert_eq!(names[1].0, "Long-standing");
    }

    #[test]
    fn views_read_the_features_they_name() {
        let f = blobs(40, 3);
        let rfm = Inputs::new(View::Rfm, &f.numeric_names).unwrap();
        let row = f.numeric_row(0);
        // recency, frequency, monetary, tenure
        let l = |v: f64| v.ln_1p();
        assert_eq!(rfm.row(row), vec![l(row[0]), l(row[1]), l(row[2]), row[3]]);
        // never active: inactive since registration; no purchase: zero
        let mut gaps = row.to_vec();
        gaps[0] = f64::NAN;
        gaps[1] = f64::NAN;
        assert_eq!(rfm.row(&gaps), vec![l(row[3]), 0.0, l(row[2]), row[3]]);
        assert_eq!(Inputs::all_features().row(row), row.to_vec());
        for view in View::ALL {
            let mut p = params(SegAlgorithm::KMeans, Some(3), f.rows);
            p.view = Some(view);
            let (s, rows) = segment(&Work::unbounded(2), &f, &p).unwrap();
            assert_eq!(s.inputs.view, view);
            assert_eq!(s.view_silhouettes.len(), 1);
            // a user is placed the same way by assign() as by the clustering
            for i in [0, 45, 100] {
                assert_eq!(
                    s.assign(f.numeric_row(i), &[]).0,
                    rows[i].0,
                    "{view:?} row {i}"
                );
            }
        }
        // left out, both views are tried and the better kept
        let (s, _) = segment(
            &Work::unbounded(2),
            &f,
            &params(SegAlgorithm::KMeans, Some(3), f.rows),
        )
        .unwrap();
        assert_eq!(s.view_silhouettes.len(), 2);
        let best = s
            .view_silhouettes
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(s.inputs.view, best.0);
        assert!(View::parse("colour").is_err());
    }

    #[test]
    fn format_1_segmentations_still_decode() {
        use crate::codec::{decode, v1, Payload, MAGIC};
        let f = blobs(30, 4);
        let mut p = params(SegAlgorithm::KMeans, Some(3), f.rows);
        p.view = Some(View::Behaviour);
        let (s, rows) = segment(&Work::unbounded(1), &f, &p).unwrap();
        let old = v1::Payload::Segmentation(v1::Segmentation {
            algorithm: s.algorithm,
            preprocessor: s.preprocessor.clone(),
            centres: s.centres.clone(),
            radius: s.radius.clone(),
            segments: s.segments.clone(),
            quality: s.quality.clone(),
            population: s.population.clone(),
        });
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&1u16.to_le_bytes());
        blob.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        let Ok(Payload::Segmentation(read)) = decode(&blob) else {
            panic!("not a segmentation")
        };
        assert_eq!(read.inputs, Inputs::all_features());
        assert_eq!(read.assign(f.numeric_row(7), &[]).0, rows[7].0);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(SegParams::from_json(SegAlgorithm::KMeans, Some(1), &Value::Null, 10).is_err());
        assert!(SegParams::from_json(SegAlgorithm::KMeans, Some(11), &Value::Null, 10).is_err());
        assert!(SegParams::from_json(
            SegAlgorithm::Dbscan,
            None,
            &serde_json::json!({"eps": 0}),
            10
        )
        .is_err());
        assert!(SegParams::from_json(
            SegAlgorithm::Dbscan,
            None,
            &serde_json::json!({"eps": -1}),
            10
        )
        .is_err());
        assert!(SegParams::from_json(
            SegAlgorithm::Dbscan,
            None,
            &serde_json::json!({"min_points": 0}),
            10
        )
        .is_err());
        assert!(SegParams::from_json(
            SegAlgorithm::KMeans,
            None,
            &serde_json::json!({"colour": 1}),
            10
        )
        .is_err());
        assert!(SegParams::from_json(SegAlgorithm::KMeans, None, &Value::Null, 1).is_err());
        assert!(SegAlgorithm::parse("spectral").is_err());
    }
}
