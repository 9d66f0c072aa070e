# Sourced by the Celery bench scripts: makes the virtualenv with Celery on first use and sets
# `venv` to it (target/celery-venv, or CELERY_BENCH_VENV).
venv="${CELERY_BENCH_VENV:-$here/../../target/celery-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "celery[redis]==5.*" "redis>=5" psutil gevent >&2
fi
export BENCH_RUN="run$$"
