// The page for people, on top of the public JSON API (/samples, /predict, /models).
// Plain DOM code, no framework and no build step: what the repository holds is what runs.
"use strict";

(() => {
  const TOKEN_KEY = "mnist-api-token";
  const PAGE_SIZE = 15;
  // Often enough that a newly published version shows up while someone is looking.
  const MODEL_REFRESH_MS = 5000;
  const BRUSH_WIDTH = 20; // on the 280 px pad: about the stroke width of MNIST's 28 px digits
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Model version -> the recipe that trained it (MODEL_RECIPE, from the served version's metadata.json
  // in /models), so each answer says which recipe gave it. Versions from before the setting existed
  // were all trained with the seed recipe.
  const recipes = new Map();
  const recipeOf = (metadata) => metadata.recipe || "seed";

  const $ = (id) => document.getElementById(id);
  const percent = (p) => `${(p * 100).toFixed(1)}%`;
  const percentLabel = (value) => `${Math.round(value * 100)}%`;

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function svgElement(tag, attributes = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function formatDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  // ---- API access, with the bearer token when the server asks for one --------------------

  let tokenPrompt = null; // one pending prompt shared by every request that got a 401

  function askForToken(message) {
    if (!tokenPrompt) {
      tokenPrompt = new Promise((resolve) => {
        const form = $("token-form");
        $("token-message").textContent = message;
        form.hidden = false;
        $("token-input").focus();
        form.addEventListener(
          "submit",
          (event) => {
            event.preventDefault();
            sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
            form.hidden = true;
            tokenPrompt = null;
            resolve();
          },
          { once: true },
        );
      });
    }
    return tokenPrompt;
  }

  function authHeaders(extra = {}) {
    const headers = new Headers(extra);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    return headers;
  }

  // fetch() that retries after asking for a token on 401, and throws the server's
  // {"error": "..."} message on any other failure.
  async function request(path, options = {}) {
    const hadToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (response.status === 401) {
      await askForToken(hadToken ? "That token was refused; please check it." : "");
      return request(path, options);
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (body && body.error) message = body.error;
      } catch {
        // not JSON: keep the status line
      }
      throw new Error(message);
    }
    return response;
  }

  const getJson = async (path) => (await request(path)).json();

  // <img> cannot send a header: if an image is refused, fetch it with the token instead.
  function loadImage(img, url) {
    img.addEventListener(
      "error",
      async () => {
        try {
          img.src = URL.createObjectURL(await (await request(url)).blob());
        } catch {
          img.alt += " (image unavailable)";
        }
      },
      { once: true },
    );
    img.dataset.src = url; // the API's URL, kept when src becomes a blob: URL
    img.src = url;
  }

  // ---- Drawing pad, upload and prediction --------------------------------------------------

  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const inkButton = $("ink-button");
  const predictButton = $("predict-button");
  const upload = $("upload");
  const colours = { ink: "#ffffff", paper: "#000000" };
  let hasInk = false;
  let uploaded = null; // the File being shown on the pad; it is sent as is, not the pad's pixels
  let stroke = null; // {id, x, y} of the pointer that is drawing

  function clearPad() {
    ctx.fillStyle = colours.paper;
    ctx.fillRect(0, 0, pad.width, pad.height);
    hasInk = false;
    uploaded = null;
    upload.value = "";
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function drawLine(from, to) {
    ctx.strokeStyle = colours.ink;
    ctx.lineWidth = BRUSH_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    hasInk = true;
  }

  // Pointer events cover mouse, pen and touch alike; CSS touch-action: none keeps the
  // finger from scrolling the page while drawing.
  pad.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (uploaded) clearPad(); // drawing starts a new digit rather than scribbling on a photo
    pad.setPointerCapture(event.pointerId);
    const point = padPoint(event);
    stroke = { id: event.pointerId, ...point };
    drawLine(point, point);
    event.preventDefault();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!stroke || stroke.id !== event.pointerId) return;
    // Coalesced events keep fast strokes smooth where the browser batches moves.
    const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const move of moves.length ? moves : [event]) {
      const point = padPoint(move);
      drawLine(stroke, point);
      Object.assign(stroke, point);
    }
  });

  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    pad.addEventListener(type, (event) => {
      if (stroke && stroke.id === event.pointerId) stroke = null;
    });
  }

  $("clear-button").addEventListener("click", () => {
    clearPad();
    $("result").hidden = true;
    $("predict-status").textContent = "Cleared. Draw a digit.";
  });

  // The server accepts either colour scheme; switching inverts what is already drawn.
  inkButton.addEventListener("click", () => {
    const image = ctx.getImageData(0, 0, pad.width, pad.height);
    for (let i = 0; i < image.data.length; i += 4) {
      image.data[i] = 255 - image.data[i];
      image.data[i + 1] = 255 - image.data[i + 1];
      image.data[i + 2] = 255 - image.data[i + 2];
    }
    ctx.putImageData(image, 0, 0);
    [colours.ink, colours.paper] = [colours.paper, colours.ink];
    const dark = colours.ink === "#000000";
    inkButton.setAttribute("aria-pressed", String(dark));
    inkButton.textContent = dark ? "White ink on black" : "Black ink on white";
  });

  function blobToBase64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  const padBlob = () => new Promise((resolve) => pad.toBlob(resolve, "image/png"));

  async function predict() {
    const status = $("predict-status");
    if (!uploaded && !hasInk) {
      status.textContent = "Draw a digit first (or upload an image).";
      return;
    }
    const what = uploaded ? `the image ${uploaded.name}` : "your drawing";
    predictButton.disabled = true;
    status.textContent = `Asking the model about ${what}…`;
    try {
      const b64 = await blobToBase64(uploaded || (await padBlob()));
      const response = await request("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ instances: [{ b64 }] }),
      });
      const body = await response.json();
      showPrediction(body.predictions[0], body.model_version, what);
      status.textContent = "";
    } catch (error) {
      $("result").hidden = true;
      status.textContent = `Could not predict: ${error.message}`;
    } finally {
      predictButton.disabled = false;
    }
  }

  function showPrediction(prediction, version, what) {
    const probabilities = prediction.probabilities;
    $("result-label").textContent = String(prediction.label);
    const recipe = recipes.get(version);
    $("result-detail").textContent =
      `${percent(probabilities[prediction.label])} sure, for ${what}` +
      ` (model version ${version}${recipe ? `, ${recipe} recipe` : ""}).`;
    $("result").dataset.recipe = recipe || "";
    const bars = probabilities.map((p, digit) => {
      const fill = element("span", { className: "bar-fill" });
      fill.style.width = `${(p * 100).toFixed(2)}%`; // CSSOM: allowed by the page's CSP
      return element(
        "li",
        { className: digit === prediction.label ? "bar best" : "bar", "data-digit": String(digit) },
        element("span", { className: "bar-digit", text: String(digit) }),
        element("span", { className: "bar-track", "aria-hidden": "true" }, fill),
        element("span", { className: "bar-value", text: percent(p) }),
      );
    });
    $("probabilities").replaceChildren(...bars);
    $("result").hidden = false;
  }

  // Shows an image file on the pad, scaled to fit, and predicts the file itself straight away.
  async function showAndPredict(file) {
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const width = bitmap.width * scale;
      const height = bitmap.height * scale;
      ctx.fillStyle = "#808080"; // neutral letterbox: the photo decides what is ink
      ctx.fillRect(0, 0, pad.width, pad.height);
      ctx.imageSmoothingEnabled = scale < 1; // a 28 px digit shows its pixels when enlarged
      ctx.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
    } catch {
      // The browser cannot show it; the server may still read it (and says so if not).
    }
    uploaded = file;
    await predict();
  }

  upload.addEventListener("change", () => {
    const file = upload.files && upload.files[0];
    if (file) showAndPredict(file);
  });

  predictButton.addEventListener("click", predict);

  // ---- Sample gallery ---------------------------------------------------------------------

  const gallery = {
    split: "test",
    wrongOnly: false,
    offset: 0,
    previous: [], // offsets of the pages before this one, for "Previous"
    next: null,
    loading: 0, // a counter so a slow old answer never overwrites a newer page
  };

  function sampleTile(sample, split) {
    // predicted is null while the server has no model loaded: show the label alone then.
    const known = sample.predicted != null;
    const wrong = known && sample.predicted !== sample.label;
    const verdict = !known ? "no model yet" : wrong ? "✗ wrong" : "✓ right";
    const img = element("img", {
      width: "84",
      height: "84",
      alt: `${split} sample ${sample.index}, a handwritten ${sample.label}`,
    });
    loadImage(img, sample.image_url);
    return element(
      "li",
      {
        className: wrong ? "tile wrong" : "tile",
        "data-index": String(sample.index),
        "data-label": String(sample.label),
        "data-predicted": known ? String(sample.predicted) : "",
      },
      img,
      element("span", { className: "tile-index", text: `#${sample.index}` }),
      element("span", { className: "tile-label" }, "Label ", element("b", { text: String(sample.label) })),
      element(
        "span",
        { className: "tile-predicted" },
        "Predicted ",
        element("b", { text: known ? String(sample.predicted) : "–" }),
        known ? ` ${percent(sample.probability)}` : "",
      ),
      element("span", { className: "verdict", text: verdict }),
      element(
        "button",
        { type: "button", className: "try", "aria-label": `Predict ${split} sample ${sample.index} in the pad` },
        "Try it",
      ),
    );
  }

  // "Try it" sends the sample's own PNG through /predict, showing all ten probabilities
  // (and giving keyboard users, who cannot draw, a way to use the predictor).
  $("gallery").addEventListener("click", async (event) => {
    const button = event.target.closest("button.try");
    if (!button) return;
    const tile = button.closest(".tile");
    const url = tile.querySelector("img").dataset.src;
    try {
      const blob = await (await request(url)).blob();
      const file = new File([blob], `${gallery.split}-${tile.dataset.index}.png`, { type: blob.type });
      await showAndPredict(file);
      $("result").scrollIntoView({ block: "nearest" });
    } catch (error) {
      $("predict-status").textContent = `Could not fetch that sample: ${error.message}`;
    }
  });

  async function loadGallery() {
    const ticket = ++gallery.loading;
    const status = $("gallery-status");
    status.textContent = "Loading samples…";
    const query = new URLSearchParams({ split: gallery.split, offset: gallery.offset, limit: PAGE_SIZE });
    if (gallery.wrongOnly) query.set("wrong_only", "true");
    try {
      const page = await getJson(`/samples?${query}`);
      if (ticket !== gallery.loading) return;
      $("gallery").replaceChildren(...page.samples.map((sample) => sampleTile(sample, page.split)));
      const pageNumber = gallery.previous.length + 1;
      gallery.next = page.next_offset ?? null;
      if (gallery.next === null && !gallery.wrongOnly && page.offset + page.samples.length < page.total) {
        gallery.next = page.offset + page.samples.length;
      }
      $("page-info").textContent = gallery.wrongOnly
        ? `Page ${pageNumber} of the wrong predictions`
        : `${page.offset + 1}–${page.offset + page.samples.length} of ${page.total.toLocaleString()}`;
      status.textContent = page.samples.length
        ? ""
        : gallery.wrongOnly
          ? "No wrong predictions here."
          : "No samples here.";
      $("prev-page").disabled = gallery.previous.length === 0;
      $("next-page").disabled = gallery.next === null;
    } catch (error) {
      if (ticket === gallery.loading) status.textContent = `Could not load samples: ${error.message}`;
    }
  }

  function restartGallery() {
    gallery.offset = 0;
    gallery.previous = [];
    loadGallery();
  }

  for (const radio of document.querySelectorAll('input[name="split"]')) {
    radio.addEventListener("change", () => {
      gallery.split = radio.value;
      restartGallery();
    });
  }
  $("wrong-only").addEventListener("change", (event) => {
    gallery.wrongOnly = event.target.checked;
    restartGallery();
  });
  $("next-page").addEventListener("click", () => {
    if (gallery.next === null) return;
    gallery.previous.push(gallery.offset);
    gallery.offset = gallery.next;
    loadGallery();
  });
  $("prev-page").addEventListener("click", () => {
    if (!gallery.previous.length) return;
    gallery.offset = gallery.previous.pop();
    loadGallery();
  });
  $("gallery-controls").addEventListener("submit", (event) => event.preventDefault());

  // ---- Model card -------------------------------------------------------------------------

  // An inline SVG line chart of per-epoch values; `series` is [{key, name}] over `history`.
  function lineChart(history, series, { yMin, yMax, format }) {
    const width = 320;
    const height = 180;
    const margin = { top: 10, right: 12, bottom: 24, left: 44 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const epochs = history.map((entry) => entry.epoch);
    const first = Math.min(...epochs);
    const last = Math.max(...epochs);
    // A single epoch sits in the middle instead of dividing by a zero-wide range.
    const x = (epoch) => margin.left + (last === first ? plotWidth / 2 : ((epoch - first) / (last - first)) * plotWidth);
    const y = (value) => margin.top + plotHeight - ((value - yMin) / (yMax - yMin || 1)) * plotHeight;

    const summary = series
      .map(({ key, name }) => `${name}: ${history.map((entry) => format(entry[key])).join(", ")}`)
      .join("; ");
    const svg = svgElement("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Per epoch ${summary}`,
      class: "line-chart",
    });
    for (let i = 0; i <= 4; i += 1) {
      const value = yMin + ((yMax - yMin) * i) / 4;
      svg.append(svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value), class: "grid" }));
      const label = svgElement("text", { x: margin.left - 6, y: y(value) + 4, class: "tick", "text-anchor": "end" });
      label.textContent = format(value);
      svg.append(label);
    }
    const step = Math.max(1, Math.ceil(epochs.length / 8)); // at most ~8 epoch labels
    epochs.forEach((epoch, i) => {
      if (i % step && i !== epochs.length - 1) return;
      const label = svgElement("text", { x: x(epoch), y: height - 6, class: "tick", "text-anchor": "middle" });
      label.textContent = String(epoch);
      svg.append(label);
    });

    series.forEach(({ key, name }, index) => {
      const points = history.filter((entry) => typeof entry[key] === "number");
      const group = svgElement("g", { class: `series series-${index}` });
      group.append(svgElement("polyline", { points: points.map((e) => `${x(e.epoch)},${y(e[key])}`).join(" ") }));
      for (const entry of points) {
        const dot = svgElement("circle", { cx: x(entry.epoch), cy: y(entry[key]), r: 3 });
        const title = svgElement("title");
        title.textContent = `${name}, epoch ${entry.epoch}: ${format(entry[key])}`;
        dot.append(title);
        group.append(dot);
      }
      svg.append(group);
    });

    const legend = element(
      "ul",
      { className: "legend" },
      ...series.map(({ name }, index) =>
        element("li", {}, element("span", { className: `swatch series-${index}`, "aria-hidden": "true" }), name),
      ),
    );
    return [svg, legend];
  }

  function renderCharts(history) {
    if (!history.length) {
      $("accuracy-chart").replaceChildren(element("p", { className: "hint", text: "No training history recorded." }));
      $("loss-chart").replaceChildren();
      return;
    }
    const accuracyKeys = ["accuracy", "val_accuracy"];
    const lossKeys = ["loss", "val_loss"];
    const values = (keys) => history.flatMap((entry) => keys.map((key) => entry[key])).filter(Number.isFinite);
    // Axis ends on multiples of 0.2, so the five ticks fall on round numbers.
    const lowest = Math.min(...values(accuracyKeys));
    const accuracyFloor = Math.max(0, Math.floor(lowest * 5) / 5 - (lowest % 0.2 < 0.02 ? 0.2 : 0));
    const lossCeiling = Math.ceil(Math.max(...values(lossKeys), 0.1) / 0.2) * 0.2;
    $("accuracy-chart").replaceChildren(
      ...lineChart(
        history,
        [
          { key: "accuracy", name: "training" },
          { key: "val_accuracy", name: "validation" },
        ],
        { yMin: accuracyFloor, yMax: 1, format: percentLabel },
      ),
    );
    $("loss-chart").replaceChildren(
      ...lineChart(
        history,
        [
          { key: "loss", name: "training" },
          { key: "val_loss", name: "validation" },
        ],
        { yMin: 0, yMax: lossCeiling, format: (v) => v.toFixed(2) },
      ),
    );
  }

  function renderConfusion(matrix, perClass) {
    const table = $("confusion");
    const head = element(
      "tr",
      {},
      element("th", { scope: "col", text: "true \\ predicted" }),
      ...matrix.map((_, digit) => element("th", { scope: "col", text: String(digit) })),
      element("th", { scope: "col", text: "accuracy" }),
    );
    const rows = matrix.map((row, truth) => {
      const total = row.reduce((sum, count) => sum + count, 0) || 1;
      const cells = row.map((count, predicted) => {
        const share = count / total;
        const cell = element("td", {
          text: String(count),
          title: `true ${truth}, predicted ${predicted}: ${count} (${percent(share)})`,
        });
        // Diagonal in green by share; mistakes in red, boosted so that a few are still visible.
        const alpha = truth === predicted ? share : Math.min(1, share * 5);
        cell.style.backgroundColor =
          truth === predicted ? `rgba(34, 139, 34, ${alpha.toFixed(3)})` : `rgba(200, 40, 40, ${alpha.toFixed(3)})`;
        if (alpha > 0.55) cell.className = "strong";
        return cell;
      });
      const accuracy = perClass && perClass[truth] != null ? percent(perClass[truth]) : percent(row[truth] / total);
      return element("tr", {}, element("th", { scope: "row", text: String(truth) }), ...cells, element("td", { className: "accuracy", text: accuracy }));
    });
    table.replaceChildren(
      element("caption", { className: "visually-hidden", text: "Confusion matrix of the served model on the test split" }),
      element("thead", {}, head),
      element("tbody", {}, ...rows),
    );
  }

  function renderFacts(models) {
    const meta = models.metadata || {};
    const hyper = meta.hyperparameters || {};
    const facts = [
      [
        "Served version",
        models.served_version == null
          ? "none yet (waiting for the trainer)"
          : `${models.served_version}${models.pinned != null ? " (pinned)" : " (newest)"}`,
        "served-version",
      ],
      ["Recipe", models.metadata ? recipeOf(meta) : "unknown", "recipe"],
      ["Trained", meta.created ? formatDate(meta.created) : "unknown", "trained"],
      ["Test accuracy", meta.test_accuracy != null ? percent(meta.test_accuracy) : "unknown", "test-accuracy"],
      ["Test loss", meta.test_loss != null ? meta.test_loss.toFixed(4) : "unknown", "test-loss"],
      ["Epochs", hyper.epochs != null ? String(hyper.epochs) : String((meta.history || []).length), "epochs"],
      ["Training images", hyper.train_images != null ? hyper.train_images.toLocaleString() : "unknown", "train-images"],
      ["Training time", meta.training_seconds != null ? `${meta.training_seconds.toFixed(1)} s` : "unknown", "training-time"],
    ];
    if (meta.libraries) {
      const names = ["keras", "tensorflow", "onnxruntime"].filter((name) => meta.libraries[name]);
      facts.push(["Libraries", names.map((name) => `${name} ${meta.libraries[name]}`).join(", "), "libraries"]);
    }
    $("model-facts").replaceChildren(
      ...facts.flatMap(([term, value, id]) => [element("dt", { text: term }), element("dd", { id: `fact-${id}`, text: value })]),
    );
  }

  function renderVersions(models) {
    const rows = [...models.versions]
      .sort((a, b) => b.version - a.version)
      .map((entry) => {
        const served = entry.version === models.served_version;
        return element(
          "tr",
          { className: served ? "served" : "", "data-version": String(entry.version) },
          element("th", { scope: "row", text: String(entry.version) }),
          element("td", { text: entry.created ? formatDate(entry.created) : "" }),
          element("td", { text: entry.test_accuracy != null ? percent(entry.test_accuracy) : "" }),
          element("td", { text: served ? "serving" : "" }),
        );
      });
    $("versions").tBodies[0].replaceChildren(...rows);
    $("failed-versions").replaceChildren(
      ...(models.failed || []).map((entry) =>
        element("li", { text: `Version ${entry.version} could not be loaded: ${entry.error}` }),
      ),
    );
  }

  let shownModels = ""; // the last /models answer drawn, to redraw only on a change

  async function refreshModels() {
    const status = $("model-status");
    try {
      const models = await getJson("/models");
      const serialised = JSON.stringify(models);
      if (serialised === shownModels) return;
      const previous = shownModels ? JSON.parse(shownModels).served_version : null;
      shownModels = serialised;
      if (models.served_version != null && models.metadata) recipes.set(models.served_version, recipeOf(models.metadata));
      $("header-version").textContent = models.served_version == null ? "none yet" : String(models.served_version);
      renderFacts(models);
      renderCharts((models.metadata && models.metadata.history) || []);
      renderConfusion((models.metadata && models.metadata.confusion_matrix) || [], models.metadata?.per_class_accuracy);
      renderVersions(models);
      status.textContent = "";
      if (previous !== null && previous !== models.served_version) {
        status.textContent = `Now serving version ${models.served_version} (was ${previous}).`;
        loadGallery(); // the predictions in the gallery came from the old model
      }
    } catch (error) {
      status.textContent = `Could not load the model card: ${error.message}`;
    }
  }

  clearPad();
  loadGallery();
  refreshModels();
  setInterval(() => {
    if (!document.hidden) refreshModels();
  }, MODEL_REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshModels();
  });
})();
