/* cellfactory: barcode scanners in keyboard-wedge mode type the barcode data and end it with Enter.
 *
 * For an input marked `data-scanner`:
 * - the scanner's closing Enter does not submit a half-filled form: it moves the focus on to the next
 *   field (or to the field whose id `data-scanner-next` names), so the technician scans and carries on;
 *   the value is trimmed of the spaces some scanners add. Ctrl/Shift/Alt/Meta+Enter keep their meaning.
 * - when the field gets the focus (autofocus, Tab, a page shown again with an error) its text is
 *   selected, so that the next scan replaces a wrong value instead of being appended to it. A tap or
 *   click still places the caret, to correct one typed character.
 *
 * Served from 'self' (the CSP forbids inline scripts). Without it the pages still work; a scanner's
 * Enter then submits the form early and the server reports the missing fields.
 */
(function () {
  "use strict";

  var FIELDS = "input:not([type=hidden]):not([disabled]), select:not([disabled]), textarea:not([disabled]), " +
    "button:not([disabled])";

  function isScannerInput(element) {
    return element instanceof HTMLInputElement && element.hasAttribute("data-scanner");
  }

  function visible(element) {
    return !!(element.offsetWidth || element.offsetHeight || element.getClientRects().length);
  }

  function nextField(input) {
    var named = input.getAttribute("data-scanner-next");
    if (named) {
      var target = document.getElementById(named);
      if (target && !target.disabled && visible(target)) {
        return target;
      }
    }
    var scope = input.form || document;
    var fields = Array.prototype.slice.call(scope.querySelectorAll(FIELDS));
    for (var i = fields.indexOf(input) + 1; i < fields.length; i += 1) {
      if (visible(fields[i]) && fields[i].tabIndex >= 0) {
        return fields[i];
      }
    }
    return null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || event.isComposing || event.ctrlKey || event.shiftKey || event.altKey ||
        event.metaKey || !isScannerInput(event.target)) {
      return;
    }
    event.preventDefault();
    var input = event.target;
    input.value = input.value.trim();
    var next = nextField(input);
    if (next) {
      next.focus();
    }
  });

  document.addEventListener("focusin", function (event) {
    if (isScannerInput(event.target)) {
      event.target.select();
    }
  });

  // The field may have been autofocused before this (deferred) script ran.
  if (isScannerInput(document.activeElement)) {
    document.activeElement.select();
  }
}());
