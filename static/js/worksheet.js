// The QC worksheet: as a result is typed, ask the server how it would be judged (the same judgement that saves
// it) and show the answer under the row. Without this script the sheet still works: it is judged on saving.
(function () {
  "use strict";
  var timers = new WeakMap();

  function show(input) {
    var output = document.getElementById(input.getAttribute("data-verdict"));
    if (!output) { return; }
    var value = input.value.trim();
    if (!value) { output.textContent = ""; output.className = "worksheet-verdict"; return; }
    var url = input.getAttribute("data-judge") + "&value=" + encodeURIComponent(value);
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (!answer || input.value.trim() !== value) { return; }
        output.textContent = answer.text;
        output.className = "worksheet-verdict verdict-" + answer.kind;
      })
      .catch(function () { output.textContent = ""; });
  }

  document.querySelectorAll("[data-judge]").forEach(function (input) {
    var later = function () {
      clearTimeout(timers.get(input));
      timers.set(input, setTimeout(function () { show(input); }, 250));
    };
    input.addEventListener("input", later);
    input.addEventListener("change", later);
    if (input.value) { show(input); }
  });
}());
