#!/usr/bin/env bash
# Stages a file larger than one device call's carry (64 MiB with the binaries) onto the GPU
# machine over several back-to-back calls, while the machine stays warm (its /tmp persists
# between calls on the same machine; a fresh machine starts empty).
#
# Here:    stage_parts.sh split FILE DIR [MIB]   cuts FILE into DIR/p0/part, DIR/p1/part, …
#                                                (MIB MiB each, default 56) and writes
#                                                DIR/p*/SHA256 (the whole file's) and NAME
# Device:  stage_parts.sh add DIR/pK DEST        (one call per part, carry: ["DIR/pK"])
#                                                keeps the part under DEST.parts/; once all
#                                                are there, joins them into DEST/NAME and
#                                                checks the sha256 (exit 0 only then)
set -euo pipefail
case ${1:-} in
  split)
    file=$2 dir=$3 mib=${4:-56}
    name=$(basename "$file")
    sum=$(sha256sum "$file" | cut -d' ' -f1)
    size=$(stat -c %s "$file")
    parts=$(( (size + mib * 1048576 - 1) / (mib * 1048576) ))
    rm -rf "$dir" && mkdir -p "$dir"
    for ((k = 0; k < parts; k++)); do
      mkdir -p "$dir/p$k"
      dd if="$file" of="$dir/p$k/part" bs=1M skip=$((k * mib)) count="$mib" status=none
      printf '%s\n' "$sum" >"$dir/p$k/SHA256"
      printf '%s %s %s\n' "$name" "$k" "$parts" >"$dir/p$k/NAME"
    done
    echo "$parts parts of at most $mib MiB in $dir (sha256 $sum)"
    ;;
  add)
    part=$2 dest=$3
    read -r name k parts <"$part/NAME"
    mkdir -p "$dest.parts" "$dest"
    cp "$part/part" "$dest.parts/$k"
    have=$(ls "$dest.parts" | wc -l)
    echo "part $k of $parts staged ($have present)"
    if [ "$have" -eq "$parts" ]; then
      for ((j = 0; j < parts; j++)); do cat "$dest.parts/$j"; done >"$dest/$name"
      echo "$(cat "$part/SHA256")  $dest/$name" | sha256sum -c -
    else
      exit 3
    fi
    ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
