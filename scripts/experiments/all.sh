#!/usr/bin/env bash
# `make experiments`: the four experiments, then one report (EXP/report.html, PNGs in EXP/report/).
source "$(dirname "$0")/common.sh"
start=$SECONDS
for e in a_domain b_bert c_context d_size; do bash "scripts/experiments/$e.sh"; done
$FOUNDRY report "$EXP"
echo "make experiments: $((SECONDS - start)) s"
