#!/usr/bin/env bash
# Is our gradient boosting as strong as a reference? Exports the same training set that
# train() uses (same snapshots, labels, features) to CSV, fits Python xgboost on the
# training snapshots (early stopping on the validation snapshot, as ours) and prints both
# holdout AUCs, with our default (auto) beside them. xgboost lives in a throwaway virtualenv; it is not a dependency of
# the extension. Usage: benches/compare_xgboost.sh [database] (default shop, after scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-shop}
VENV=${CA_BENCH_VENV:-/tmp/customer-analyzer-bench-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q xgboost pandas scikit-learn
OUT=$(mktemp -d)
chmod 0777 "$OUT"
for task in churn purchase; do
  runuser -u postgres -- psql -X -q -d "$DB" -c "\\copy (
      SELECT s.role, f.*, l.label
      FROM customer_analyzer.training_snapshots('$task') s,
           LATERAL customer_analyzer.labels('$task', s.as_of) l
           JOIN LATERAL customer_analyzer.user_features(s.as_of) f USING (user_id)
      WHERE s.role IN ('train', 'validation', 'holdout')
    ) TO '$OUT/$task.csv' CSV HEADER"
  ours=$(runuser -u postgres -- psql -X -qtA -d "$DB" -c "
      SELECT string_agg(a.algorithm || ' ' || round(a.auc::numeric, 4), ', ' ORDER BY a.n)
      FROM (SELECT 1 AS n, t.algorithm, t.auc FROM customer_analyzer.train('$task', 'gbm', '{\"deploy\": \"never\"}') t
            UNION ALL
            SELECT 2, 'auto: ' || t.algorithm, t.auc FROM customer_analyzer.train('$task', params => '{\"deploy\": \"never\"}') t) a")
  "$VENV/bin/python" - "$OUT/$task.csv" "$task" "$ours" <<'PY'
import sys, time
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score
path, task, ours = sys.argv[1], sys.argv[2], sys.argv[3]
df = pd.read_csv(path)
y = df.pop("label").map({"t": 1, "f": 0, True: 1, False: 0}).astype(int)
role = df.pop("role")
df = df.drop(columns=["user_id"])
for c in ["status", "favourite_category"]:
    df[c] = df[c].astype("category")
train, val, test = role == "train", role == "validation", role == "holdout"
model = xgb.XGBClassifier(n_estimators=1000, max_depth=5, learning_rate=0.05,
                          enable_categorical=True, tree_method="hist",
                          early_stopping_rounds=50, eval_metric="logloss")
t0 = time.time()
model.fit(df[train], y[train], eval_set=[(df[val], y[val])], verbose=False)
auc = roc_auc_score(y[test], model.predict_proba(df[test])[:, 1])
print(f"{task}: {train.sum()} training rows, {test.sum()} holdout rows; "
      f"holdout AUC customer_analyzer {ours}; xgboost {auc:.4f} (xgboost fit {time.time()-t0:.1f} s)")
PY
done
rm -rf "$OUT"
