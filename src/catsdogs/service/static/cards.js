// One card per photo: its preview, its label and probability bars, or why it could not be used.
//
// Every string here (file names, labels, the server's messages) is written with textContent,
// never parsed as HTML, so nothing a file or the server sends can add markup or script.

const UNNAMED = "pasted image";

/**
 * Make the card of one photo from the page's <template>, showing the photo as its preview.
 *
 * @param {HTMLTemplateElement} template the page's card template.
 * @param {File} file the photo.
 * @param {(card: object) => void} onExplain called when the card's picture or Grad-CAM button is clicked.
 * @returns {object} the card: its elements and its state.
 */
export function createCard(template, file, onExplain) {
  const root = template.content.cloneNode(true).querySelector(".card");
  const card = {
    file,
    name: file.name || UNNAMED,
    root,
    image: root.querySelector(".card-image"),
    media: root.querySelector(".card-media"),
    badge: root.querySelector(".card-badge"),
    fileName: root.querySelector(".card-file"),
    stateLine: root.querySelector(".card-state"),
    label: root.querySelector(".card-label"),
    bars: root.querySelector(".card-bars"),
    error: root.querySelector(".card-error"),
    time: root.querySelector(".card-time"),
    explainButton: root.querySelector(".card-explain"),
    explainNote: root.querySelector(".card-note"),
    previewUrl: URL.createObjectURL(file),
    overlayUrl: null,
    showingOverlay: false,
    explainBusy: false,
    busyRetries: 0,
    result: null,
    failed: false,
    removed: false,
  };
  card.fileName.textContent = card.name;
  card.fileName.title = card.name;
  card.image.alt = card.name;
  card.image.addEventListener("error", () => {
    // The browser cannot draw this file (a broken or unusual one): show a plain placeholder.
    if (!card.showingOverlay) {
      card.media.classList.add("card-media-empty");
    }
  });
  card.image.src = card.previewUrl;
  card.explainButton.addEventListener("click", () => onExplain(card));
  // A click on the picture does what the button does; the button is the keyboard's way in.
  card.media.addEventListener("click", () => onExplain(card));
  return card;
}

/** The name a photo is sent under. */
export function uploadName(card) {
  return card.file.name || UNNAMED;
}

/** Show that the card waits or works, with a spinner. */
export function setCardState(card, text) {
  card.stateLine.textContent = text;
  card.stateLine.hidden = false;
  card.root.classList.add("card-pending");
}

/**
 * Show a prediction: the label, one bar per class (most probable first) and the time taken.
 *
 * @param {object} card the photo's card.
 * @param {object} prediction one entry of /v1/predict's `predictions`.
 * @param {number} milliseconds the round trip, as the page measured it.
 * @param {boolean} explain whether the server can draw Grad-CAM overlays.
 */
export function showCardResult(card, prediction, milliseconds, explain) {
  card.result = prediction;
  card.root.classList.remove("card-pending");
  card.stateLine.hidden = true;
  // "unsure" when the export's abstain rule says the model is not sure enough; the bars still show its lean.
  const unsure = prediction.abstained === true;
  card.label.textContent = unsure ? `unsure (leans to ${prediction.label})` : String(prediction.label);
  card.label.title = unsure && prediction.reason ? String(prediction.reason) : "";
  card.label.classList.toggle("card-label-unsure", unsure);
  card.label.hidden = false;
  const probabilities =
    prediction.probabilities && typeof prediction.probabilities === "object"
      ? Object.entries(prediction.probabilities)
      : [[prediction.label, prediction.probability]];
  probabilities.sort((first, second) => Number(second[1]) - Number(first[1]));
  card.bars.replaceChildren(...probabilities.map(([name, value]) => makeBar(name, value, name === prediction.label)));
  card.bars.hidden = false;
  card.time.textContent = formatDuration(milliseconds);
  const serverSeconds = Number(prediction.seconds);
  if (Number.isFinite(serverSeconds)) {
    card.time.title = `${formatDuration(serverSeconds * 1000)} on the server; the rest is the upload and the network.`;
  }
  updateExplainButton(card, explain);
}

function makeBar(name, value, isLabel) {
  const probability = Math.min(Math.max(Number(value) || 0, 0), 1);
  const row = document.createElement("li");
  row.className = isLabel ? "bar bar-label" : "bar";
  const nameCell = document.createElement("span");
  nameCell.className = "bar-name";
  nameCell.textContent = String(name);
  const track = document.createElement("span");
  track.className = "bar-track";
  track.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.className = "bar-fill";
  // Setting a style property from script is allowed by the CSP; a style attribute is not.
  fill.style.width = `${(probability * 100).toFixed(1)}%`;
  track.append(fill);
  const valueCell = document.createElement("span");
  valueCell.className = "bar-value";
  valueCell.textContent = formatPercent(probability);
  row.append(nameCell, track, valueCell);
  return row;
}

/** Show why the photo could not be used, and the time taken when a request was made. */
export function showCardError(card, message, milliseconds) {
  card.failed = true;
  card.root.classList.remove("card-pending");
  card.root.classList.add("card-failed");
  card.stateLine.hidden = true;
  card.error.textContent = message;
  card.error.hidden = false;
  card.time.textContent = milliseconds === undefined ? "" : formatDuration(milliseconds);
}

/** Offer Grad-CAM on a labelled card when the server can draw it. */
export function updateExplainButton(card, explain) {
  const offered = explain && Boolean(card.result);
  card.explainButton.hidden = !offered;
  card.media.classList.toggle("card-media-clickable", offered);
}

/** Show the Grad-CAM overlay (`show` true) or the photo again. */
export function showOverlay(card, show) {
  card.showingOverlay = show;
  card.explainNote.hidden = true;
  card.image.src = show ? card.overlayUrl : card.previewUrl;
  card.image.alt = show ? `Grad-CAM overlay of ${card.name}` : card.name;
  card.badge.hidden = !show;
  card.explainButton.textContent = show ? "Show photo" : "Show Grad-CAM";
  card.explainButton.setAttribute("aria-pressed", String(show));
}

/** Show a note under the card, e.g. why its Grad-CAM failed. */
export function showCardNote(card, text) {
  card.explainNote.textContent = text;
  card.explainNote.hidden = false;
}

/** Free the card's object URLs and stop it from taking late answers. */
export function releaseCard(card) {
  card.removed = true;
  URL.revokeObjectURL(card.previewUrl);
  if (card.overlayUrl) {
    URL.revokeObjectURL(card.overlayUrl);
  }
}

/** One line about all cards: "3 photos · cats: 1 · dogs: 1 · 1 not usable". */
export function summarize(cards) {
  const byLabel = new Map();
  let failed = 0;
  for (const card of cards) {
    if (card.result) {
      const answer = card.result.abstained === true ? "unsure" : card.result.label;
      byLabel.set(answer, (byLabel.get(answer) || 0) + 1);
    } else if (card.failed) {
      failed += 1;
    }
  }
  const done = Array.from(byLabel.values()).reduce((sum, count) => sum + count, 0);
  const parts = [`${cards.length} ${cards.length === 1 ? "photo" : "photos"}`];
  for (const [label, count] of byLabel) {
    parts.push(`${label}: ${count}`);
  }
  if (failed) {
    parts.push(`${failed} not usable`);
  }
  const waiting = cards.length - done - failed;
  if (waiting) {
    parts.push(`${waiting} waiting`);
  }
  return parts.join(" · ");
}

/** A bad photo's reason from the service ({code, message, received}), or a plain string. */
export function describePredictionError(error) {
  if (typeof error === "string") {
    return error;
  }
  if (error && typeof error.message === "string") {
    return error.message;
  }
  return "This file could not be used.";
}

export function formatPercent(value) {
  return Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "–";
}

export function formatDuration(milliseconds) {
  return milliseconds < 1000 ? `${Math.round(milliseconds)} ms` : `${(milliseconds / 1000).toFixed(1)} s`;
}

export function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) {
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }
  return bytes >= 1024 ? `${Math.round(bytes / 1024)} KB` : `${bytes} bytes`;
}
