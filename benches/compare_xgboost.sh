#!/usr/bin/env bash
# Is our gradient boosting as strong as a reference? Exports the same training set that
# train() uses (same snapshots, labels, features) to CSV, fits Python xgboost on the
# training snapshots with train()'s default depth, rounds and learning rate, and prints
# both holdout AUCs. xgboost lives in a throwaway virtualenv; it is not a dependency of
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
    ) TO '$OUT/$task.csv' CSV HEADER"
  ours=$(runuser -u postgres -- psql -X -qtA -d "$DB" -c "
      SELECT round(t.auc::numeric, 4)
      FROM customer_analyzer.train('$task', 'gbm', '{\"deploy\": \"never\"}') t")
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
train, test = role == "train", role == "holdout"
model = xgb.XGBClassifier(n_estimators=200, max_depth=5, learning_rate=0.1,
                          enable_categorical=True, tree_method="hist")
t0 = time.time()
model.fit(df[train], y[train])
auc = roc_auc_score(y[test], model.predict_proba(df[test])[:, 1])
print(f"{task}: {train.sum()} training rows, {test.sum()} holdout rows; "
      f"holdout AUC customer_analyzer gbm {ours}, xgboost {auc:.4f} (xgboost fit {time.time()-t0:.1f} s)")
PY
done
rm -rf "$OUT"
