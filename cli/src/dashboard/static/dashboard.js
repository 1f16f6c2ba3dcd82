// shoal dashboard: live updates over server-sent events, nothing else.
// - An element with data-live="/live/..." has its content replaced by each message.
// - An element with data-append="/..." gets each message (HTML) added at its end,
//   keeping at most data-max children, and stays scrolled to the end if it was there.
"use strict";
(function () {
  var conn = document.getElementById("conn");
  var open = 0;
  function say() {
    if (conn) conn.textContent = open > 0 ? "live" : "reconnecting…";
  }
  function watch(url, onMessage) {
    var es = new EventSource(url);
    var up = false;
    es.onopen = function () { if (!up) { up = true; open++; say(); } };
    es.onerror = function () { if (up) { up = false; open--; say(); } else { say(); } };
    es.onmessage = onMessage;
  }
  document.querySelectorAll("[data-live]").forEach(function (el) {
    watch(el.getAttribute("data-live"), function (e) { el.innerHTML = e.data; });
  });
  document.querySelectorAll("[data-append]").forEach(function (el) {
    var max = Number(el.getAttribute("data-max")) || 1000;
    var box = el.closest("[data-scroll]") || document.scrollingElement;
    watch(el.getAttribute("data-append"), function (e) {
      var atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
      el.querySelectorAll("[data-placeholder]").forEach(function (p) { p.remove(); });
      el.insertAdjacentHTML("beforeend", e.data);
      while (el.children.length > max) el.removeChild(el.firstElementChild);
      if (atEnd) box.scrollTop = box.scrollHeight;
    });
  });
})();
