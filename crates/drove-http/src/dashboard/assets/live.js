// Drove dashboard: live updates on top of server-rendered pages.
//
// Every few seconds (body[data-live-ms]) while the tab is visible, re-fetch this very page and
// swap the contents of each element marked data-live (matched by id). Forms outside those
// regions are never touched, so typing is not interrupted. One request at a time; on errors
// the interval doubles up to 30 s. The page works fully without this script.
(function () {
  'use strict';
  var every = parseInt(document.body.getAttribute('data-live-ms') || '0', 10);
  if (!every || !window.fetch || !window.DOMParser) return;
  var status = document.getElementById('live-status');
  var delay = every;
  var timer = null;
  var busy = false;

  function say(text, ok) {
    if (!status) return;
    status.textContent = text;
    status.className = ok ? 'live-ok' : 'live-err';
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, 'text/html');
    var regions = document.querySelectorAll('[data-live]');
    for (var i = 0; i < regions.length; i++) {
      var el = regions[i];
      var next = el.id && fresh.getElementById(el.id);
      if (next && next.innerHTML !== el.innerHTML) el.innerHTML = next.innerHTML;
    }
  }

  function refresh() {
    if (busy || document.hidden) return; // visibilitychange starts it again
    busy = true;
    fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.redirected) throw new Error('logged out: reload the page');
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        swap(html);
        delay = every;
        say('live', true);
      })
      .catch(function (e) {
        delay = Math.min(delay * 2, 30000);
        say('not updating (' + e.message + ')', false);
      })
      .then(function () {
        busy = false;
        schedule(delay);
      });
  }

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) schedule(0);
  });
  say('live', true);
  schedule(every);
})();
