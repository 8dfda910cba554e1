#!/usr/bin/env python3
"""Compares Pod Security verdicts of `onus check -o json` (WKL-02..09, the Pod Security Standards
controls) with a Kyverno CLI policy report (`kyverno apply … --policy-report --output-format json`)
of bench/kyverno-pss-restricted.yaml: which workloads each finds failing restricted.

usage: pss-verdicts.py ONUS_JSON KYVERNO_OUTPUT
"""
import json
import sys

PSS_CONTROLS = {f"WKL-0{i}" for i in range(2, 10)}


def onus_failing(path):
    report = json.load(open(path))
    failing = set()
    for control in report["controls"]:
        if control["id"] in PSS_CONTROLS:
            for offender in control["offenders"]:
                failing.add(offender["object"].split(":")[0])
    return failing


def json_values(text):
    """Every JSON value in the text (the CLI prints lines of prose around its report)."""
    decoder = json.JSONDecoder()
    at = 0
    while True:
        starts = [i for i in (text.find("{", at), text.find("[", at)) if i >= 0]
        if not starts:
            return
        at = min(starts)
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        yield value
        at = end


def reports(value):
    if isinstance(value, list):
        for v in value:
            yield from reports(v)
    elif isinstance(value, dict):
        if "results" in value:
            yield value
        for v in value.get("items", []):
            yield from reports(v)


def kyverno_verdicts(path):
    failing, passing = set(), set()
    for value in json_values(open(path).read()):
        for report in reports(value):
            for result in report.get("results") or []:
                for res in result.get("resources") or []:
                    name = "/".join(
                        p for p in (res.get("kind"), res.get("namespace"), res.get("name")) if p
                    )
                    (failing if result.get("result") == "fail" else passing).add(name)
    return failing, passing - failing


def main():
    onus = onus_failing(sys.argv[1])
    kyverno, kyverno_pass = kyverno_verdicts(sys.argv[2])
    judged = kyverno | kyverno_pass
    kinds = sorted({o.split("/")[0] for o in judged})
    print(f"\nPod Security restricted verdicts: Kyverno judged {len(judged)} objects ({', '.join(kinds)}),"
          f" {len(kyverno)} failing; onus check's WKL-02..09 name {len(onus)} failing")
    only_onus = sorted(onus - kyverno)
    only_kyverno = sorted(kyverno - onus)
    print(f"  failing in both: {len(onus & kyverno)}")
    print(f"  failing only for onus check: {len(only_onus)} {only_onus[:10]}")
    print(f"  failing only for Kyverno: {len(only_kyverno)} {only_kyverno[:10]}")
    print("  verdicts agree" if not only_onus and not only_kyverno else "  verdicts DIFFER")


if __name__ == "__main__":
    main()
