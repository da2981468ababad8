// hcdtf slide view: the slide (deep zoom), the heat map as an image layer, findings drawn on top.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("hcdtf-config").textContent);
  if (!cfg.dzi) { return; }
  var $ = function (id) { return document.getElementById(id); };
  var state = $("tile-state");
  var viewer = OpenSeadragon({
    id: "view", prefixUrl: "/static/openseadragon/images/", tileSources: cfg.dzi,
    drawer: "canvas", showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 2,
    gestureSettingsMouse: { clickToZoom: false }, showRotationControl: false, showFlipControl: false,
    showSequenceControl: false
  });
  window.hcdtfViewer = viewer;
  var slideItem = null, heatItem = null, found = null;

  // ----- the findings canvas, above the tiles
  var marks = document.createElement("canvas");
  marks.id = "marks";
  viewer.canvas.appendChild(marks);

  function toScreen(x, y) {
    return slideItem.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  }
  function ring(ctx, pts) {
    for (var k = 0; k < pts.length; k++) {
      var p = toScreen(pts[k][0], pts[k][1]);
      if (k === 0) { ctx.moveTo(p.x, p.y); } else { ctx.lineTo(p.x, p.y); }
    }
    ctx.closePath();
  }
  function draw() {
    var w = viewer.canvas.clientWidth, h = viewer.canvas.clientHeight;
    if (marks.width !== w || marks.height !== h) { marks.width = w; marks.height = h; }
    var ctx = marks.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!slideItem || !found) { return; }
    if ($("truth-on").checked) {
      ctx.lineWidth = 2;
      found.truth.forEach(function (t) {
        ctx.beginPath();
        t.rings.forEach(function (r) { ring(ctx, r); });
        ctx.setLineDash(t.tumour ? [] : [6, 4]);
        ctx.strokeStyle = t.tumour ? "#00e000" : "#ffffff";
        ctx.stroke();
      });
      ctx.setLineDash([]);
    }
    if ($("regions-on").checked) {
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffff00";
      found.regions.forEach(function (r) {
        ctx.beginPath();
        r.rings.forEach(function (pts) { ring(ctx, pts); });
        ctx.stroke();
      });
    }
    if ($("detections-on").checked) {
      found.detections.forEach(function (d) {
        var p = toScreen(d.x, d.y);
        if (p.x < -10 || p.y < -10 || p.x > w + 10 || p.y > h + 10) { return; }
        ctx.beginPath();
        ctx.arc(p.x, p.y, 6, 0, 2 * Math.PI);
        ctx.fillStyle = "rgba(255,255,255,0.85)";
        ctx.fill();
        ctx.lineWidth = 2;
        ctx.strokeStyle = "#d00000";
        ctx.stroke();
      });
    }
  }
  viewer.addHandler("update-viewport", draw);
  viewer.addHandler("resize", draw);
  ["truth-on", "regions-on", "detections-on"].forEach(function (id) { $(id).addEventListener("change", draw); });

  // ----- tiles: the page says when every layer is fully loaded (tests wait for it)
  function checkLoaded() {
    var n = viewer.world.getItemCount(), all = n > 0 && (!cfg.heat || heatItem !== null);
    for (var k = 0; k < n; k++) { all = all && viewer.world.getItemAt(k).getFullyLoaded(); }
    state.textContent = all ? "tiles loaded" : "loading tiles";
    document.body.dataset.tiles = all ? "loaded" : "loading";
  }
  viewer.addHandler("open", function () {
    slideItem = viewer.world.getItemAt(0);
    slideItem.addHandler("fully-loaded-change", checkLoaded);
    if (cfg.heat) {
      viewer.addTiledImage({
        tileSource: { type: "image", url: cfg.heat.url, buildPyramid: false },
        x: 0, y: 0, width: cfg.heat.width, opacity: $("opacity").value / 100,
        success: function (e) {
          heatItem = e.item;
          heatItem.addHandler("fully-loaded-change", checkLoaded);
          checkLoaded();
        },
        error: function () { state.textContent = "heat map failed to load"; }
      });
    }
    checkLoaded();
  });
  viewer.addHandler("open-failed", function (e) { state.textContent = "slide failed to open: " + e.message; });
  $("opacity").addEventListener("input", function () { if (heatItem) { heatItem.setOpacity(this.value / 100); } });
  $("heat-on").addEventListener("change", function () {
    if (heatItem) { heatItem.setOpacity(this.checked ? $("opacity").value / 100 : 0); }
  });

  fetch(cfg.features).then(function (r) { return r.json(); }).then(function (f) {
    found = f;
    f.messages.forEach(function (m) {
      var p = document.createElement("p");
      p.className = "message";
      p.textContent = m;
      document.body.insertBefore(p, $("controls"));
    });
    document.body.dataset.features = "loaded";
    draw();
  });

  // ----- a click on a detection shows its probability
  var popup = $("popup");
  viewer.addHandler("canvas-click", function (e) {
    if (!e.quick || !found || !slideItem) { return; }
    var best = null, bestD = 12;
    found.detections.forEach(function (d, k) {
      var p = toScreen(d.x, d.y), dist = Math.hypot(p.x - e.position.x, p.y - e.position.y);
      if (dist <= bestD) { best = { d: d, k: k }; bestD = dist; }
    });
    if (best === null) { popup.hidden = true; return; }
    e.preventDefaultAction = true;
    var view = $("view").getBoundingClientRect();
    popup.textContent = "detection " + (best.k + 1) + ": p = " + best.d.p.toFixed(3) +
      " at (" + Math.round(best.d.x) + ", " + Math.round(best.d.y) + ")";
    popup.style.left = (view.left + window.scrollX + e.position.x + 12) + "px";
    popup.style.top = (view.top + window.scrollY + e.position.y + 12) + "px";
    popup.hidden = false;
  });
}());
