"""`hcdtf slide predict|embed --runner RUNNER`: a cohort of slides on Apache Beam, one slide per element.

Built with :func:`hcdtf.inference.beam.run_pipeline`: slide paths -> a ``DoFn`` that loads the model
once per worker (``setup``) and runs :func:`hcdtf.slide.inference.predict_slide` on each slide ->
``slides.csv``. Each slide's outputs go to ``<output-dir>/<slide id>/`` exactly as without Beam
(same files, same bytes), so a rerun skips finished slides and resumes killed ones, and a slide
that cannot be read is reported in ``slides.csv`` while the others finish. The slides and the
output directory must be reachable by every worker (a shared file system).

``slide embed --runner`` is built the same way (:func:`embed_slides_beam`): the encoder is loaded
once per worker, each slide's ``<slide id>.h5`` is written by :func:`hcdtf.slide.embed.embed_slide`
(resumable in parts, atomic, the same bytes as in process), and the rows make ``embeddings.csv``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Iterable


def _scorer_fn(model_path: str, backend: str | None, out: str, settings_dict: dict, threads: int,
               checkpoint_seconds: float):
    import apache_beam as beam

    class PredictSlide(beam.DoFn):
        def setup(self):
            from hcdtf.slide import inference

            self.model = inference.load_model(model_path, log=lambda *_: None, backend=backend)

        def process(self, path):
            import time

            import openslide

            from hcdtf.slide import inference, reader

            path, t = pathlib.Path(path), time.perf_counter()
            settings = inference.Settings(**settings_dict)
            try:
                status, summary = inference.predict_slide(path, pathlib.Path(out), self.model, settings, False,
                                                          lambda *_: None, threads, checkpoint_seconds)
            except (reader.SlideError, openslide.OpenSlideError, inference.StaleOutputError) as e:  # a row, not a crash
                message = str(e) if str(path) in str(e) else f"{path}: {e}"
                yield inference.slide_row(path, "failed", seconds=time.perf_counter() - t, error=message)
                return
            yield inference.slide_row(path, status, summary, time.perf_counter() - t)

    return beam.ParDo(PredictSlide())


def predict_slides_beam(model_path, inputs, output_dir, settings, runner: str, options: Iterable[str] = (),
                        backend: str | None = None, threads: int = 2, checkpoint_seconds: float = 30.0,
                        log: Callable[[str], None] = print) -> dict:
    """:func:`hcdtf.slide.inference.predict_slides` as a Beam pipeline on ``runner``."""
    import time

    import apache_beam as beam

    from hcdtf.inference import backends, beam as beam_predict
    from hcdtf.slide import inference

    options, settings, slides, out = _checked(runner, options, settings, inputs, output_dir)
    backends.resolve(model_path, backend, log)  # a wrong path fails here, not on a worker
    t = time.perf_counter()
    score = _scorer_fn(str(model_path), backend, str(out), dataclasses.asdict(settings), threads, checkpoint_seconds)
    sink = "Collect" >> beam.combiners.ToList() | "Summary" >> beam.Map(
        lambda r: inference.write_slide_rows(out / "slides.csv", sorted(r, key=lambda x: x["slide"])))
    log(f"{len(slides)} slide(s) on Apache Beam ({runner}); outputs in {out}")
    beam_predict.run_pipeline(beam.Create([str(s) for s in slides]) | "Spread" >> beam.Reshuffle(), score, sink,
                              runner, options)
    return inference.result_of(inference.read_slide_rows(out / "slides.csv"), out, time.perf_counter() - t, log)


# --------------------------------------------------------------------------- `hcdtf slide embed --runner`
def _embed_fn(model: str, weights: str, seed: int, out: str, settings_dict: dict, threads: int,
              checkpoint_seconds: float):
    import apache_beam as beam

    class EmbedSlide(beam.DoFn):
        def setup(self):
            from hcdtf.slide import embed

            self.encoder = embed.load_encoder(model, weights, seed, log=lambda *_: None)

        def process(self, path):
            import time

            from hcdtf.slide import embed, inference

            path, t = pathlib.Path(path), time.perf_counter()
            try:  # an unreadable slide is a failed row in embed_row; stale bags too here (a row, not a crash)
                yield embed.embed_row(path, pathlib.Path(out), self.encoder, inference.Settings(**settings_dict),
                                      False, lambda *_: None, threads, checkpoint_seconds)
            except inference.StaleOutputError as e:
                yield {"slide": path.stem, "status": "failed", "seconds": round(time.perf_counter() - t, 2),
                       "path": str(path), "error": str(e)}

    return beam.ParDo(EmbedSlide())


def embed_slides_beam(model, inputs, output_dir, settings, runner: str, options: Iterable[str] = (),
                      weights: str = "imagenet", seed: int = 0, threads: int = 2, checkpoint_seconds: float = 30.0,
                      log: Callable[[str], None] = print) -> dict:
    """:func:`hcdtf.slide.embed.embed_slides` as a Beam pipeline on ``runner``: one slide per element,
    the encoder loaded once per worker, each bag written by :func:`hcdtf.slide.embed.embed_slide`
    exactly as in process (same file, same bytes: the same code on the same batches), so a rerun
    skips finished slides and resumes killed ones; ``embeddings.csv`` from the collected rows, in
    the in-process order. A bag of another encoder or other settings is a failed row (the in-process
    path stops instead; ``--overwrite`` is not offered on Beam)."""
    import time

    import apache_beam as beam

    from hcdtf.inference import beam as beam_predict
    from hcdtf.slide import embed, inference

    options, settings, slides, out = _checked(runner, options, settings, inputs, output_dir)
    embed.check_model(model)  # a wrong MODEL fails here, not on a worker
    t = time.perf_counter()
    step = _embed_fn(str(model), str(weights), int(seed), str(out), dataclasses.asdict(settings), threads,
                     checkpoint_seconds)
    rank = {str(s): n for n, s in enumerate(slides)}  # the in-process order
    sink = "Collect" >> beam.combiners.ToList() | "Summary" >> beam.Map(
        lambda r: embed.write_rows(out, sorted(r, key=lambda x: rank[x["path"]])))
    log(f"{len(slides)} slide(s) on Apache Beam ({runner}); bags in {out}")
    beam_predict.run_pipeline(beam.Create([str(s) for s in slides]) | "Spread" >> beam.Reshuffle(), step, sink,
                              runner, options)
    return embed.result_of(inference.read_slide_rows(out / "embeddings.csv"), out, time.perf_counter() - t, log)


def _checked(runner: str, options: Iterable[str], settings, inputs, output_dir):
    """What both launchers check before a worker starts: the runner and its options, the settings,
    the slides and the output directory. Returns ``(options, settings, slides, out)``."""
    from hcdtf.inference import beam as beam_predict
    from hcdtf.slide import inference, reader

    options = list(options)
    beam_predict.check_runner(runner, options)
    settings = settings.validate()
    slides = reader.list_slides(inputs)
    out = pathlib.Path(output_dir)
    inference.check_output_dir(out, slides)
    return options, settings, slides, out
