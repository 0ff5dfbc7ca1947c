/* accelscope's clientside callbacks (registered in Python as ClientsideFunction("accelscope", name)).
   Only the browser knows the graph's width and when a figure has been painted; these turn
   that into small requests for the server. */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
    accelscope: {
        /* run-select -> {"run": index, "width_px": the width the timeline's plot area will have
           (the graph less its margins), "n": a number new for each request (a live reload asks
           for the same run again), "lanes": the host-lanes mode, "ranks": the ranks picked (null: the run's default)}. */
        request: function (run, lanes, ranks, config) {
            const el = document.getElementById('timeline-graph');
            const margin = (config && config.margin_px) || 0;
            const w = el ? el.getBoundingClientRect().width - margin : null;
            window._accelscopeRequests = (window._accelscopeRequests || 0) + 1;
            return {run: run, width_px: w && w > 0 ? Math.round(w) : null, n: window._accelscopeRequests, lanes: lanes, ranks: ranks && ranks.length ? ranks : null};
        },

        /* A new whole-run timeline (not a zoom of it) -> {"run", "n"} two frames later, once it is
           painted, which asks for the sections below it. A timeline that fails still lets them
           load, after config.rest_wait_ms. */
        rest: function (figure, request, last, config) {
            const nope = window.dash_clientside.no_update;
            if (!request || (last && last.n === request.n)) { return nope; }
            const triggered = (window.dash_clientside.callback_context.triggered || []).map(t => t.prop_id);
            const drawn = triggered.some(id => id.startsWith('timeline-graph.'));
            const wait = (config && config.rest_wait_ms) || 4000;
            return new Promise(resolve => {
                const done = () => resolve({run: request.run, n: request.n});
                if (drawn) { requestAnimationFrame(() => requestAnimationFrame(done)); } else { setTimeout(done, wait); }
            });
        },

        /* relayoutData -> {"relayout": ..., "width_px": plot-area width}; nothing for changes that are not zooms. */
        view: function (relayout) {
            const nope = window.dash_clientside.no_update;
            if (!relayout || !Object.keys(relayout).some(k => k.startsWith('xaxis'))) { return nope; }
            const gd = document.querySelector('#timeline-graph .js-plotly-plot');
            const size = gd && gd._fullLayout && gd._fullLayout._size;
            return {relayout: relayout, width_px: size ? Math.round(size.w) : null};
        },

        /* The Ranks section's button: zoom the timeline (and the metrics with it) to the window the
           collectives figure shows (its layout.meta.window_ms), and scroll to it. */
        showOnTimeline: function (n, figure) {
            const nope = window.dash_clientside.no_update;
            const win = figure && figure.layout && figure.layout.meta && figure.layout.meta.window_ms;
            const tl = document.querySelector('#timeline-graph .js-plotly-plot');
            if (!n || !win || !tl) { return nope; }
            Plotly.relayout(tl, {'xaxis.range': win.slice()});
            const section = document.getElementById('section-timeline');
            if (section) { section.scrollIntoView({block: 'start'}); }
            return nope;
        },

        /* The timeline and a graph beneath it on its time axis (followerId: the metrics, the memory;
           one callback each) share their time range: a zoom or pan of either moves the other (the
           timeline's own callback then redraws it for the new range; its relayout moves the other
           followers). Each side is moved only when its range differs, which ends the echo of the
           relayout it causes. */
        sync: function (timelineRelayout, metricsRelayout, followerId) {
            const nope = window.dash_clientside.no_update;
            const tl = document.querySelector('#timeline-graph .js-plotly-plot');
            const mx = document.querySelector('#' + (followerId || 'metrics-graph') + ' .js-plotly-plot');
            if (!tl || !mx || !tl._fullLayout || !mx._fullLayout || !mx._fullLayout.xaxis || !tl._fullLayout.xaxis) { return nope; }
            const whole = mx.layout.meta && mx.layout.meta.x_range;
            if (!whole) { return nope; }
            const same = (a, b) => Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) <= 1e-9 * Math.max(Math.abs(b[1] - b[0]), 1e-9);
            const fromTimeline = (window.dash_clientside.callback_context.triggered || []).some(t => t.prop_id.startsWith('timeline-graph.'));
            if (fromTimeline) {
                const rel = timelineRelayout || {};
                const reset = Object.keys(rel).some(k => k.endsWith('.autorange') && rel[k]);
                const range = reset ? whole : tl._fullLayout.xaxis.range;
                if (!same(mx._fullLayout.xaxis.range, range)) { Plotly.relayout(mx, {'xaxis.range': range.slice()}); }
            } else {
                const rel = metricsRelayout || {};
                const reset = Object.keys(rel).some(k => k.endsWith('.autorange') && rel[k]);
                if (reset) { Plotly.relayout(mx, {'xaxis.range': whole.slice()}); }  // the whole run, not the samples' extent
                const range = reset ? whole : mx._fullLayout.xaxis.range;
                if (same(range, whole)) {
                    const tlWhole = tl._fullLayout.xaxis.autorange || same(tl._fullLayout.xaxis.range, whole);
                    if (!tlWhole) { Plotly.relayout(tl, {'xaxis.autorange': true}); }
                } else if (!same(tl._fullLayout.xaxis.range, range)) {
                    Plotly.relayout(tl, {'xaxis.range': range.slice()});
                }
            }
            return nope;
        }
    }
});

/* Value formatters for the grids (dash-ag-grid finds them by name: {"function": "bytes(params.value)"}). */
window.dashAgGridFunctions = Object.assign({}, window.dashAgGridFunctions, {
    /* Bytes, signed, in the largest unit under them: 1.50 GiB, 12.0 MiB, 512 B (as memory_tables.size_text). */
    bytes: function (n) {
        if (n === null || n === undefined) { return '—'; }
        const units = [['GiB', 1073741824], ['MiB', 1048576], ['KiB', 1024]];
        for (const [unit, scale] of units) {
            if (Math.abs(n) >= scale) {
                const v = n / scale, a = Math.abs(v);
                const digits = a < 10 ? 2 : a < 100 ? 1 : 0;
                return v.toLocaleString('en-US', {minimumFractionDigits: digits, maximumFractionDigits: digits}) + ' ' + unit;
            }
        }
        return n.toLocaleString('en-US') + ' B';
    }
});
