"""Whole slides: OpenSlide reading at the model's resolution, tissue mask, heat map, detections,
slide score, ASAP annotations, the Camelyon16 protocol (slide AUC, lesion FROC) and synthetic slides.

Modules: ``reader`` (OpenSlide, resolution matching), ``tissue``, ``grid`` (cells and patches),
``inference`` (``slide predict``), ``heatmap`` (detections, score, overlay), ``annotations``
(ASAP XML, mask TIFFs), ``annotations_out`` (tumour regions; QuPath GeoJSON and ASAP XML out),
``viewer`` (``slide view``: deep zoom in the browser), ``camelyon`` (evaluation mask, FROC, AUC),
``evaluate`` and ``report``
(``slide evaluate``), ``synthetic`` (``sample-slides``), ``beam`` (``slide predict --runner``),
``cli`` and ``demo``. Importing this
package imports neither OpenSlide nor TensorFlow.
"""

from hcdtf.slide.demo import demo

__all__ = ["demo"]
