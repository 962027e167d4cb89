// The member page's code: fetch a new signed member code before the shown one expires
// (every data-refresh seconds, and whenever the page comes back into view) and count down.
(function () {
  "use strict";
  var line = document.getElementById("m-countdown");
  var img = document.getElementById("m-qr");
  var last4 = document.getElementById("m-last4");
  if (!line || !img) { return; }
  var refreshS = parseInt(line.getAttribute("data-refresh"), 10) || 45;
  var url = line.getAttribute("data-url");
  var fetchedAt = Date.now();
  var busy = false;

  function show() {
    var left = refreshS - Math.floor((Date.now() - fetchedAt) / 1000);
    if (left <= 0) {
      line.textContent = line.getAttribute("data-expired");
      renew();
      return;
    }
    line.textContent = line.getAttribute("data-left").replace("{s}", String(left));
  }

  function renew() {
    if (busy) { return; }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (data && data.qr) {
          img.src = data.qr;
          if (last4) { last4.textContent = data.last4; }
          fetchedAt = Date.now();
          refreshS = data.refresh_s || refreshS;
        } else {
          retrySoon();
        }
      })
      .catch(retrySoon)
      .then(function () { busy = false; show(); });
  }

  function retrySoon() {
    // No new code (offline): try again in 5 seconds rather than at once.
    fetchedAt = Date.now() - Math.max(refreshS - 5, 0) * 1000;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { renew(); }
  });
  window.setInterval(show, 1000);
  show();
})();
