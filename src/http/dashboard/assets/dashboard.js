/*
 * InvoiceIQ dashboard: reads /stats/summary and /stats/daily (and, for the admin,
 * /stats/merchants) and draws the figures and Chart.js charts. Plain browser JS, no build
 * step; everything it loads comes from this server (Chart.js is served at
 * /dashboard/assets/chart.umd.js). Days are Africa/Nairobi calendar days (UTC+3).
 */
(function () {
  'use strict';

  var body = document.body;
  var isAdmin = body.getAttribute('data-viewer') === 'admin';
  var el = function (id) {
    return document.getElementById(id);
  };
  var form = el('filters');
  var presetInput = el('preset');
  var fromInput = el('from');
  var toInput = el('to');
  var merchantInput = el('merchant'); // null for a merchant: they see themselves only
  var statusLine = el('status');

  var COLORS = { sent: '#2563eb', paid: '#16a34a', pending: '#9ca3af', failed: '#dc2626', cancelled: '#475569', collected: '#0f766e' };
  var STATUSES = ['paid', 'sent', 'pending', 'failed', 'cancelled'];
  var STATUS_LABELS = { paid: 'Paid', sent: 'Sent', pending: 'Pending', failed: 'Failed', cancelled: 'Cancelled' };
  var MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  var DAY_MS = 86400000;
  var ISO_DAY = /^\d{4}-\d{2}-\d{2}$/;

  // ---- formatting (kept in step with the bot: 'KES 1,500') ----
  function grouped(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }
  function money(n) {
    return 'KES ' + grouped(n);
  }
  function shortMoney(n) {
    if (n >= 1e6) return (Math.round(n / 1e5) / 10) + 'M';
    if (n >= 1e3) return (Math.round(n / 100) / 10) + 'k';
    return String(n);
  }
  /** 45 -> '45 s', 600 -> '10 min', 8100 -> '2 h 15 min', 180000 -> '2 d 2 h'; null -> '–'. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    if (seconds < 60) return Math.round(seconds) + ' s';
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + ' min';
    if (seconds < DAY_MS / 1000) return Math.floor(minutes / 60) + ' h ' + (minutes % 60) + ' min';
    var hours = Math.round(seconds / 3600);
    return Math.floor(hours / 24) + ' d ' + (hours % 24) + ' h';
  }
  function dayLabel(day) {
    return Number(day.slice(8, 10)) + ' ' + MONTHS[Number(day.slice(5, 7)) - 1];
  }
  function longDay(day) {
    return dayLabel(day) + ' ' + day.slice(0, 4);
  }
  function localPhone(phone) {
    var m = /^254(\d{3})(\d{3})(\d{3})$/.exec(phone);
    return m ? '0' + m[1] + ' ' + m[2] + ' ' + m[3] : phone;
  }

  // ---- days ----
  function nairobiDay(instant) {
    return new Date(instant.getTime() + 3 * 3600000).toISOString().slice(0, 10);
  }
  function addDays(day, n) {
    return new Date(Date.parse(day + 'T00:00:00Z') + n * DAY_MS).toISOString().slice(0, 10);
  }
  function presetPeriod(preset, today) {
    if (preset === 'month') return { from: today.slice(0, 8) + '01', to: today };
    if (preset === 'last-month') {
      var lastDay = addDays(today.slice(0, 8) + '01', -1);
      return { from: lastDay.slice(0, 8) + '01', to: lastDay };
    }
    var days = Number(preset);
    return { from: addDays(today, -(days - 1)), to: today };
  }
  function presetFor(period, today) {
    var names = ['7', '30', '90', 'month', 'last-month'];
    for (var i = 0; i < names.length; i += 1) {
      var p = presetPeriod(names[i], today);
      if (p.from === period.from && p.to === period.to) return names[i];
    }
    return 'custom';
  }

  // ---- state: the period and merchant shown (also kept in the address bar) ----
  var query = new URLSearchParams(location.search);
  var state = { from: null, to: null, merchant: isAdmin ? query.get('merchant') || '' : '' };
  if (ISO_DAY.test(query.get('from') || '') && ISO_DAY.test(query.get('to') || '')) {
    state.from = query.get('from');
    state.to = query.get('to');
  }
  // The server's clock decides "today" (from generated_at); the phone's is only a fallback.
  var today = nairobiDay(new Date());

  function syncAddress() {
    var q = new URLSearchParams();
    q.set('from', state.from);
    q.set('to', state.to);
    if (state.merchant) q.set('merchant', state.merchant);
    history.replaceState(null, '', location.pathname + '?' + q.toString());
  }

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.className = isError ? 'status is-error' : 'status';
  }
  function showSessionEnded() {
    statusLine.textContent = 'Your session has ended. ';
    statusLine.className = 'status is-error';
    var again = document.createElement('a');
    again.href = '/dashboard';
    again.textContent = 'Sign in again';
    statusLine.appendChild(again);
  }

  // ---- charts (created once, then updated without animation: cheap phones) ----
  var charts = {};
  var ChartJs = window.Chart;
  if (ChartJs) {
    ChartJs.defaults.font.family = getComputedStyle(body).fontFamily;
    ChartJs.defaults.font.size = 12;
    ChartJs.defaults.color = '#5b6472';
    ChartJs.defaults.animation = false;
    ChartJs.defaults.maintainAspectRatio = false;
    ChartJs.defaults.devicePixelRatio = Math.min(window.devicePixelRatio || 1, 2);
    ChartJs.defaults.plugins.legend.labels.boxWidth = 12;
  }

  function barOptions(tickFormat) {
    return {
      responsive: true,
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { position: 'bottom' },
        tooltip: tickFormat ? { callbacks: { label: function (item) { return item.dataset.label + ': ' + money(item.parsed.y); } } } : {},
      },
      scales: {
        x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 7 } },
        y: { beginAtZero: true, ticks: { precision: 0, callback: tickFormat || undefined } },
      },
    };
  }

  function drawCharts(summary, days) {
    if (!ChartJs) return;
    var labels = days.map(function (d) { return dayLabel(d.day); });
    var sent = days.map(function (d) { return d.sent; });
    var paid = days.map(function (d) { return d.paid; });
    var collected = days.map(function (d) { return d.collected; });
    var counts = STATUSES.map(function (s) { return summary.invoice_stats[s]; });

    if (!charts.daily) {
      charts.daily = new ChartJs(el('chart-daily'), {
        type: 'bar',
        data: { labels: labels, datasets: [
          { label: 'Sent', data: sent, backgroundColor: COLORS.sent },
          { label: 'Paid', data: paid, backgroundColor: COLORS.paid },
        ] },
        options: barOptions(null),
      });
      charts.collected = new ChartJs(el('chart-collected'), {
        type: 'bar',
        data: { labels: labels, datasets: [{ label: 'Collected', data: collected, backgroundColor: COLORS.collected }] },
        options: (function () {
          var o = barOptions(function (value) { return shortMoney(value); });
          o.plugins.legend = { display: false };
          return o;
        })(),
      });
      charts.status = new ChartJs(el('chart-status'), {
        type: 'doughnut',
        data: { labels: STATUSES.map(function (s) { return STATUS_LABELS[s]; }), datasets: [{ data: counts, backgroundColor: STATUSES.map(function (s) { return COLORS[s]; }), borderWidth: 1 }] },
        options: { responsive: true, cutout: '60%', plugins: { legend: { display: false } } },
      });
      return;
    }
    charts.daily.data.labels = labels;
    charts.daily.data.datasets[0].data = sent;
    charts.daily.data.datasets[1].data = paid;
    charts.collected.data.labels = labels;
    charts.collected.data.datasets[0].data = collected;
    charts.status.data.datasets[0].data = counts;
    charts.daily.update('none');
    charts.collected.update('none');
    charts.status.update('none');
  }

  function setFigure(id, value, text) {
    var node = el('fig-' + id);
    node.textContent = text;
    node.setAttribute('data-value', value === null ? '' : String(value));
  }

  function render(summary, days) {
    var s = summary.invoice_stats;
    var a = summary.amounts;
    setFigure('total', s.total, grouped(s.total));
    el('sub-total').textContent = money(a.invoiced) + ' invoiced';
    setFigure('collected', a.collected, money(a.collected));
    el('sub-collected').textContent = s.paid + ' paid';
    setFigure('outstanding', a.outstanding, money(a.outstanding));
    el('sub-outstanding').textContent = s.overdue + ' overdue';
    setFigure('conversion', summary.conversion_rate, summary.conversion_rate + '%');
    setFigure('time', summary.average_payment_time_seconds, duration(summary.average_payment_time_seconds));
    STATUSES.forEach(function (key) {
      el('count-' + key).textContent = grouped(s[key]);
    });
    drawCharts(summary, days);
  }

  // ---- loading ----
  var sequence = 0;

  function getJson(path) {
    return fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } }).then(function (res) {
      return res.json().then(
        function (json) { return { status: res.status, json: json }; },
        function () { return { status: res.status, json: null }; }
      );
    });
  }

  function load() {
    var mine = (sequence += 1);
    var q = new URLSearchParams();
    if (state.from && state.to) {
      q.set('from', state.from);
      q.set('to', state.to);
    }
    if (state.merchant) q.set('merchant', state.merchant);
    var suffix = q.toString() ? '?' + q.toString() : '';
    body.setAttribute('data-state', 'loading');
    setStatus('Loading…', false);
    Promise.all([getJson('/stats/summary' + suffix), getJson('/stats/daily' + suffix)]).then(
      function (results) {
        if (mine !== sequence) return; // a newer choice is on its way
        var failed = results[0].status !== 200 ? results[0] : results[1].status !== 200 ? results[1] : null;
        if (failed) {
          body.setAttribute('data-state', 'error');
          if (failed.status === 401) return showSessionEnded();
          return setStatus((failed.json && failed.json.message) || 'Something went wrong (' + failed.status + '). Try again.', true);
        }
        var summary = results[0].json;
        var days = results[1].json.days;
        today = nairobiDay(new Date(summary.generated_at));
        state.from = summary.period.from;
        state.to = summary.period.to;
        fromInput.value = state.from;
        toInput.value = state.to;
        presetInput.value = presetFor(state, today);
        syncAddress();
        render(summary, days);
        var who = merchantInput && merchantInput.selectedIndex > 0 ? merchantInput.options[merchantInput.selectedIndex].text : null;
        setStatus((who ? who + ': ' : '') + longDay(state.from) + ' to ' + longDay(state.to) + (ChartJs ? '' : ' (charts could not load)'), false);
        body.setAttribute('data-state', 'ready');
        body.setAttribute('data-loaded', state.from + '..' + state.to + '|' + state.merchant);
      },
      function () {
        if (mine !== sequence) return;
        body.setAttribute('data-state', 'error');
        setStatus('Could not reach InvoiceIQ. Check your connection, then press Show.', true);
      }
    );
  }

  function loadMerchants() {
    return getJson('/stats/merchants').then(function (res) {
      if (res.status !== 200 || !res.json) return;
      res.json.merchants.forEach(function (m) {
        var option = document.createElement('option');
        option.value = m.phone;
        option.textContent = (m.business_name || 'No name') + ' · ' + localPhone(m.phone);
        merchantInput.appendChild(option);
      });
      merchantInput.value = state.merchant;
      if (merchantInput.value !== state.merchant) merchantInput.value = '';
    }, function () { /* the list is a convenience; the figures still load */ });
  }

  // ---- inputs ----
  presetInput.addEventListener('change', function () {
    if (presetInput.value === 'custom') {
      fromInput.focus();
      return;
    }
    var p = presetPeriod(presetInput.value, today);
    state.from = p.from;
    state.to = p.to;
    fromInput.value = p.from;
    toInput.value = p.to;
    load();
  });
  [fromInput, toInput].forEach(function (input) {
    input.addEventListener('input', function () {
      presetInput.value = 'custom';
    });
  });
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (!ISO_DAY.test(fromInput.value) || !ISO_DAY.test(toInput.value)) {
      setStatus('Choose both dates.', true);
      return;
    }
    if (fromInput.value > toInput.value) {
      setStatus('The first date must not be after the second.', true);
      return;
    }
    state.from = fromInput.value;
    state.to = toInput.value;
    load();
  });
  if (merchantInput) {
    merchantInput.addEventListener('change', function () {
      state.merchant = merchantInput.value;
      load();
    });
  }

  if (merchantInput) loadMerchants();
  load();
})();
