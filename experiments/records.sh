# Sourced by experiments/run: the committed records of finished sweep jobs (experiments/records/<experiment>/).
# copy_records FROM TO [new]: every record.json under FROM into TO at the same relative path (the job directory's
# name); with `new`, only where TO holds none, so a record a sweep wrote here is never replaced by the kept one.
copy_records() {
  (cd "$1" && find . -name record.json -print0) | while IFS= read -r -d '' record; do
    [ "${3:-}" = new ] && [ -e "$2/$record" ] && continue
    mkdir -p "$2/$(dirname "$record")" && cp "$1/$record" "$2/$record"
  done
}
