// customer_analyzer dashboard: draws the charts from the JSON each page embeds (Apache
// ECharts, served by this binary) and keeps scores live from /api/events.
(function () {
  'use strict';

  var fmt = function (v) { return Number(v).toFixed(4); };

  function live() {
    var status = document.getElementById('live-status');
    if (!document.querySelector('[data-live-user]') || !window.EventSource) { return; }
    var source = new EventSource('/api/events');
    var received = 0;
    source.onopen = function () { status.textContent = 'live: on'; status.classList.add('on'); };
    source.onerror = function () { status.textContent = 'live: reconnecting'; status.classList.remove('on'); };
    source.addEventListener('score', function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (_) { return; }
      if (typeof d.score !== 'number') { return; }
      received += 1;
      status.textContent = 'live: on (' + received + ')';
      var selector = '[data-live-user="' + Number(d.user_id) + '"][data-live-task="' + String(d.task).replace(/[^a-z_]/g, '') + '"]';
      document.querySelectorAll(selector).forEach(function (el) {
        el.textContent = fmt(d.score);
        el.dataset.liveAt = d.event_at || new Date().toISOString();
        el.classList.remove('flash');
        void el.offsetWidth;
        el.classList.add('flash');
      });
    });
  }

  var empty = function (text) {
    return { title: { text: text, left: 'center', top: 'middle', textStyle: { color: '#888', fontSize: 13, fontWeight: 'normal' } } };
  };
  var unit = { type: 'value', min: 0, max: 1 };
  var diagonal = { type: 'line', data: [[0, 0], [1, 1]], symbol: 'none', lineStyle: { type: 'dashed', color: '#aaa' }, tooltip: { show: false }, silent: true };
  var lines = function (d) {
    return Object.keys(d).map(function (task) {
      return { name: task, type: 'line', data: d[task], showSymbol: false };
    });
  };

  var builders = {
    roc: function (d) {
      if (!Object.keys(d).length) { return empty('No ROC curve stored: retrain to record one'); }
      return { legend: {}, tooltip: { trigger: 'axis' }, grid: { containLabel: true, left: 30, right: 20 },
               xAxis: Object.assign({ name: 'false positive rate', nameLocation: 'middle', nameGap: 25 }, unit),
               yAxis: Object.assign({ name: 'true positive rate', nameLocation: 'middle', nameGap: 35 }, unit),
               series: lines(d).concat([diagonal]) };
    },
    reliability: function (d) {
      if (!Object.keys(d).length) { return empty('No reliability table'); }
      return { legend: {}, tooltip: { trigger: 'axis' }, grid: { containLabel: true, left: 30, right: 20 },
               xAxis: Object.assign({ name: 'mean predicted', nameLocation: 'middle', nameGap: 25 }, unit),
               yAxis: Object.assign({ name: 'observed rate', nameLocation: 'middle', nameGap: 35 }, unit),
               series: lines(d).map(function (s) { s.showSymbol = true; return s; }).concat([diagonal]) };
    },
    importance: function (d) {
      var tasks = Object.keys(d);
      if (!tasks.length) { return empty('No model deployed'); }
      var w = 100 / tasks.length;
      return {
        tooltip: {},
        title: tasks.map(function (t, i) { return { text: t, left: (i * w + 1) + '%', textStyle: { fontSize: 12 } }; }),
        grid: tasks.map(function (t, i) { return { left: (i * w + 1) + '%', width: (w - 6) + '%', top: 30, bottom: 10, containLabel: true }; }),
        xAxis: tasks.map(function (t, i) { return { type: 'value', gridIndex: i, axisLabel: { fontSize: 9 } }; }),
        yAxis: tasks.map(function (t, i) { return { type: 'category', gridIndex: i, inverse: true, data: d[t].map(function (p) { return p[0]; }), axisLabel: { fontSize: 10 } }; }),
        series: tasks.map(function (t, i) { return { name: t, type: 'bar', xAxisIndex: i, yAxisIndex: i, data: d[t].map(function (p) { return p[1]; }) }; })
      };
    },
    weekly: function (d) {
      if (!Object.keys(d).length) { return empty('No matured predictions yet: live AUC appears once a horizon has passed'); }
      // one sorted axis of weeks for every task (tasks may cover different weeks)
      var weeks = {};
      Object.keys(d).forEach(function (t) { d[t].forEach(function (p) { weeks[p[0]] = true; }); });
      return { legend: {}, tooltip: { trigger: 'axis' }, grid: { containLabel: true, left: 30, right: 20 },
               xAxis: { type: 'category', data: Object.keys(weeks).sort() }, yAxis: { type: 'value', min: 0, max: 1, name: 'AUC', nameLocation: 'middle', nameGap: 40 },
               series: lines(d).map(function (s) { s.showSymbol = true; return s; }) };
    },
    sizes: function (d) {
      if (!d.length) { return empty('No segments'); }
      return { tooltip: {}, grid: { containLabel: true, left: 30, right: 20 },
               xAxis: { type: 'category', data: d.map(function (p) { return p[0]; }), axisLabel: { interval: 0, rotate: 20 } },
               yAxis: { type: 'value', name: 'users', nameLocation: 'middle', nameGap: 50 },
               series: [{ type: 'bar', data: d.map(function (p) { return p[1]; }) }] };
    },
    map: function (d) {
      if (!Object.keys(d).length) { return empty('No users segmented'); }
      return { legend: { type: 'scroll' }, tooltip: {}, grid: { containLabel: true, left: 30, right: 20 },
               xAxis: { type: 'value', name: 'days since last activity', nameLocation: 'middle', nameGap: 25 },
               yAxis: { type: 'value', name: 'log10(1 + spend)', nameLocation: 'middle', nameGap: 30 },
               series: Object.keys(d).map(function (s) { return { name: s, type: 'scatter', symbolSize: 4, data: d[s] }; }) };
    },
    transitions: function (d) {
      if (!d.length) { return empty('Only one segmentation'); }
      var nodes = {};
      var links = d.map(function (t) {
        var from = 'before: ' + t[0], to = 'now: ' + t[1];
        nodes[from] = true; nodes[to] = true;
        return { source: from, target: to, value: t[2] };
      });
      return { tooltip: {}, series: [{ type: 'sankey', left: 10, right: 140, emphasis: { focus: 'adjacency' },
               data: Object.keys(nodes).map(function (n) { return { name: n }; }), links: links }] };
    }
  };

  function charts() {
    var holder = document.getElementById('chart-data');
    if (!holder || !window.echarts) { return; }
    var data = JSON.parse(holder.textContent);
    document.querySelectorAll('[data-chart]').forEach(function (el) {
      var make = builders[el.dataset.chart];
      if (!make) { return; }
      var chart = window.echarts.init(el, null, { renderer: 'canvas' });
      chart.setOption(make(data[el.dataset.chart] || {}));
      el.dataset.drawn = 'true';
      window.addEventListener('resize', function () { chart.resize(); });
    });
  }

  document.addEventListener('DOMContentLoaded', function () { charts(); live(); });
})();
