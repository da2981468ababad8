"""hcdtf benchmarks: throughput and memory of every stage, measured side by side.

Run ``python -m benchmarks`` (or ``make bench``); see benchmarks/README.md. Importing this package
imports nothing heavy: each figure imports TensorFlow (or PyTorch) when it runs.
"""
