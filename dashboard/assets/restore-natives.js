/* Dash's Babel polyfill swaps in a regex String.prototype.trim and a parseInt/parseFloat wrapper
   (its feature test rejects U+180E, which Unicode no longer counts as whitespace); plotly.js
   parses every colour with them. The browser's own, kept by page.html before the polyfill ran,
   are correct and much faster. Dash loads this file after the polyfill, before drawing. */
(function (n) {
    if (!n) { return; }
    String.prototype.trim = n[0];
    window.parseInt = Number.parseInt = n[1];
    window.parseFloat = Number.parseFloat = n[2];
})(window.__accelscopeNative);
