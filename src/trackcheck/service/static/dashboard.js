// trackcheck dashboard: small progressive enhancements; every page works without this file.
(function () {
  "use strict";

  // Live fragments are replaced wholesale (htmx outerHTML swaps): keep the <details> a reader opened open.
  var open = new Set();
  document.addEventListener("htmx:beforeSwap", function () {
    open = new Set();
    document.querySelectorAll(".live details[id][open]").forEach(function (el) { open.add(el.id); });
  });
  document.addEventListener("htmx:afterSettle", function () {
    open.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.open = true; }
    });
  });

})();
