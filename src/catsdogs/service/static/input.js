// How photos come into the page: the file picker (opened by the drop zone, a real button),
// a drop anywhere on the page, or a paste from the clipboard.

function hasFiles(event) {
  return Boolean(event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files"));
}

/**
 * Take photos from the file picker, a drop anywhere on the page, or a paste.
 *
 * @param {object} elements the page's dropZone, fileInput and keyInput elements.
 * @param {(files: Iterable<File>) => void} addFiles called with the photos, in the order given.
 */
export function wirePhotoInput(elements, addFiles) {
  elements.dropZone.addEventListener("click", () => elements.fileInput.click());
  elements.fileInput.addEventListener("change", () => {
    addFiles(elements.fileInput.files);
    // Clear the input so that choosing the same file again still fires "change".
    elements.fileInput.value = "";
  });
  // The whole window accepts a drop, so a near miss does not make the browser open the photo.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (hasFiles(event)) {
      dragDepth += 1;
      elements.dropZone.classList.add("drop-zone-active");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (hasFiles(event)) {
      dragDepth = Math.max(dragDepth - 1, 0);
      if (!dragDepth) {
        elements.dropZone.classList.remove("drop-zone-active");
      }
    }
  });
  document.addEventListener("dragover", (event) => {
    if (hasFiles(event)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    }
  });
  document.addEventListener("drop", (event) => {
    if (hasFiles(event)) {
      event.preventDefault();
      dragDepth = 0;
      elements.dropZone.classList.remove("drop-zone-active");
      addFiles(event.dataTransfer.files);
    }
  });
  document.addEventListener("paste", (event) => {
    if (event.target === elements.keyInput || !event.clipboardData) {
      return;
    }
    const files = Array.from(event.clipboardData.items || [])
      .filter((item) => item.kind === "file")
      .map((item) => item.getAsFile())
      .filter(Boolean);
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
}
