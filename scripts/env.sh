# Sourced by the other scripts: where the project's build and test tree live. One home
# for these paths.
#
# CA_PG_TREE is the project's own copy of Debian's PostgreSQL 15 installation (binaries,
# libraries, headers, share files; PostgreSQL finds its files relative to its binaries,
# so a copy is a working installation of its own). The extension is built against it
# and the tests install into it, so a test run never changes what Debian's clusters load.
# It must be readable by the postgres user, so it does not live in the checkout.
export CA_PG_TREE=${CA_PG_TREE:-/var/lib/customer_analyzer/pg15}
export CA_PG_CONFIG=$CA_PG_TREE/lib/postgresql/15/bin/pg_config
# cargo-pgrx's home for this project: its pg15 is the tree's pg_config.
export PGRX_HOME=${CA_PGRX_HOME:-/var/lib/customer_analyzer/pgrx}
# Debian's own installation, which the demo cluster runs.
export DEBIAN_PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
