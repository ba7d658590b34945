/*
 * InvoiceIQ simulator page: two simulated phones (merchant, customer) talking to the real bot
 * through the sandbox, plus the SMS inboxes, the M-PESA STK prompt and a control panel.
 * Plain browser JS, no build step. It polls GET /simulator/api/state and redraws only what
 * changed; the API contract is src/simulator/contract.ts. Everything is built with
 * createElement/textContent (messages carry user text), and nothing sets inline styles (CSP).
 */
(function () {
  'use strict';

  var WHO = ['merchant', 'customer'];
  var SWITCHES = ['notOnWhatsApp', 'outsideWindow', 'callbackLost', 'whatsappDown'];
  var POLL_MS = 700;
  var OUTCOME_MS = 3500; // how long an answered prompt stays on the phone
  var LANG_KEY = 'invoiceiq.simulator.lang';

  // ---- labels, English and Kiswahili ({name} placeholders) ----
  var I18N = {
    en: {
      title: 'InvoiceIQ simulator',
      subtitle: 'Two phones, no real accounts: WhatsApp, SMS and M-PESA are simulated; the bot is real.',
      merchant: 'Merchant', customer: 'Customer', language: 'Language',
      placeholder: 'Type a message', send: 'Send', empty: 'No messages yet. Say hi to start.',
      sms: 'Messages (SMS)', smsEmpty: 'No SMS yet.',
      prompts: 'M-PESA prompts', template: 'Template',
      payQ: 'Do you want to pay {amount} to {ref}?', enterPin: 'Enter M-PESA PIN',
      ok: 'OK', cancel: 'Cancel', timeout: 'Let it time out', close: 'Close',
      demoPin: 'Demo PIN: {pin}', expires: 'Times out in {s} s',
      st_waiting: 'Waiting for PIN', st_paid: 'Paid, receipt {r}', st_paidNoReceipt: 'Paid',
      st_wrong_pin: 'Wrong PIN', st_cancelled: 'Cancelled', st_timed_out: 'Timed out',
      cb_none: '', cb_posted: 'callback posted', cb_lost: 'callback lost', cb_failed: 'callback failed',
      scenarios: 'Fallback scenarios',
      sw_notOnWhatsApp: 'Customer not on WhatsApp', swh_notOnWhatsApp: 'Meta answers 131026; the bot falls back to SMS.',
      sw_outsideWindow: 'Outside the 24-hour window', swh_outsideWindow: 'Free-form messages fail (131047); invoices go as templates.',
      sw_callbackLost: 'M-PESA callback lost', swh_callbackLost: 'Safaricom never posts the result; reconciliation heals it.',
      sw_whatsappDown: 'WhatsApp down', swh_whatsappDown: 'Every send gets HTTP 503: retries, then SMS.',
      reconcile: 'Ask M-PESA now (reconcile)', reset: 'Reset',
      reconciled: 'Asked M-PESA: {q} queried, {a} applied, {e} expired.', resetDone: 'Everything was cleared.',
      log: 'Provider log', logEmpty: 'Nothing yet.',
      offline: 'Cannot reach the server.', httpError: 'Request failed (HTTP {status}).', pinFormat: 'Enter the PIN first.',
      tk_pending: 'Sending', tk_sent: 'Sent', tk_delivered: 'Delivered', tk_read: 'Read', tk_failed: 'Not delivered',
    },
    sw: {
      title: 'Kiigaji cha InvoiceIQ',
      subtitle: 'Simu mbili, bila akaunti halisi: WhatsApp, SMS na M-PESA ni za kuigiza; boti ni halisi.',
      merchant: 'Mfanyabiashara', customer: 'Mteja', language: 'Lugha',
      placeholder: 'Andika ujumbe', send: 'Tuma', empty: 'Hakuna ujumbe bado. Sema habari kuanza.',
      sms: 'Ujumbe (SMS)', smsEmpty: 'Hakuna SMS bado.',
      prompts: 'Maombi ya M-PESA', template: 'Kiolezo',
      payQ: 'Je, unataka kulipa {amount} kwa {ref}?', enterPin: 'Weka PIN ya M-PESA',
      ok: 'OK', cancel: 'Ghairi', timeout: 'Iache muda uishe', close: 'Funga',
      demoPin: 'PIN ya majaribio: {pin}', expires: 'Muda unaisha baada ya sekunde {s}',
      st_waiting: 'Inasubiri PIN', st_paid: 'Imelipwa, risiti {r}', st_paidNoReceipt: 'Imelipwa',
      st_wrong_pin: 'PIN si sahihi', st_cancelled: 'Imeghairiwa', st_timed_out: 'Muda umeisha',
      cb_none: '', cb_posted: 'callback imetumwa', cb_lost: 'callback imepotea', cb_failed: 'callback imeshindwa',
      scenarios: 'Hali za dharura',
      sw_notOnWhatsApp: 'Mteja hayuko WhatsApp', swh_notOnWhatsApp: 'Meta inajibu 131026; boti inatumia SMS badala yake.',
      sw_outsideWindow: 'Nje ya dirisha la saa 24', swh_outsideWindow: 'Ujumbe huru unashindwa (131047); ankara zinaenda kama violezo.',
      sw_callbackLost: 'Callback ya M-PESA imepotea', swh_callbackLost: 'Safaricom haitumi matokeo; upatanisho unarekebisha.',
      sw_whatsappDown: 'WhatsApp haifanyi kazi', swh_whatsappDown: 'Kila utumaji unapata HTTP 503: inajaribu tena, kisha SMS.',
      reconcile: 'Uliza M-PESA sasa (patanisha)', reset: 'Anza upya',
      reconciled: 'M-PESA imeulizwa: {q} zimeulizwa, {a} zimetumika, {e} zimeisha muda.', resetDone: 'Kila kitu kimefutwa.',
      log: 'Kumbukumbu ya watoa huduma', logEmpty: 'Hakuna bado.',
      offline: 'Seva haipatikani.', httpError: 'Ombi limeshindwa (HTTP {status}).', pinFormat: 'Weka PIN kwanza.',
      tk_pending: 'Inatuma', tk_sent: 'Imetumwa', tk_delivered: 'Imefika', tk_read: 'Imesomwa', tk_failed: 'Haikufika',
    },
  };
  // 'pending' is a small clock drawn by CSS (no emoji font needed).
  var TICKS = { pending: '', sent: '\u2713', delivered: '\u2713\u2713', read: '\u2713\u2713', failed: '!' };

  var lang = readLang();
  function t(key, vars) {
    var s = I18N[lang][key];
    if (s === undefined) s = I18N.en[key] || key;
    return s.replace(/\{(\w+)\}/g, function (_, name) {
      return vars && vars[name] !== undefined ? String(vars[name]) : '';
    });
  }
  function readLang() {
    try {
      var saved = localStorage.getItem(LANG_KEY);
      if (saved === 'en' || saved === 'sw') return saved;
    } catch (e) { /* storage blocked: fall through */ }
    return /^sw\b/i.test(navigator.language || '') ? 'sw' : 'en';
  }

  // ---- tiny DOM helpers ----
  /** h('button.a.b', {type: 'button', dataset: {x: 1}}, child...) */
  function h(tag, attrs) {
    var parts = tag.split('.');
    var node = document.createElement(parts[0]);
    if (parts.length > 1) node.className = parts.slice(1).join(' ');
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'dataset') Object.keys(v).forEach(function (d) { node.dataset[d] = v[d]; });
        else if (k === 'text') node.textContent = v;
        else if (k === 'on') Object.keys(v).forEach(function (ev) { node.addEventListener(ev, v[ev]); });
        else node.setAttribute(k, v === true ? '' : v);
      });
    }
    for (var i = 2; i < arguments.length; i += 1) if (arguments[i]) node.append(arguments[i]);
    return node;
  }
  // Elements whose text/attribute follows the language: re-labelled when it changes.
  var labelled = [];
  function label(node, key, attr) {
    labelled.push({ node: node, key: key, attr: attr });
    if (attr) node.setAttribute(attr, t(key));
    else node.textContent = t(key);
    return node;
  }
  function relabel() {
    labelled.forEach(function (l) {
      if (l.attr) l.node.setAttribute(l.attr, t(l.key));
      else l.node.textContent = t(l.key);
    });
  }

  // ---- formatting ----
  function hhmm(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return '';
    return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  }
  function ksh(amount) {
    var fixed = Number(amount).toFixed(2).split('.');
    return 'Ksh' + fixed[0].replace(/\B(?=(\d{3})+(?!\d))/g, ',') + '.' + fixed[1];
  }
  /**
   * Message text with WhatsApp *bold*: the asterisks stay in the DOM (hidden by CSS), so the
   * element's textContent is exactly what the bot sent.
   */
  function richText(node, text) {
    var re = /\*([^*\n]+)\*/g;
    var last = 0;
    var m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) node.append(text.slice(last, m.index));
      node.append(h('span.md', { text: '*' }), h('strong', { text: m[1] }), h('span.md', { text: '*' }));
      last = m.index + m[0].length;
    }
    if (last < text.length) node.append(text.slice(last));
    return node;
  }

  // ---- API ----
  function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!res.ok) throw new Error((data && data.message) || t('httpError', { status: res.status }));
        return data;
      });
    }, function () {
      throw new Error(t('offline'));
    });
  }

  // ---- page state ----
  var state = null; // the last SimulatorState
  var view = 'merchant'; // the phone shown on narrow screens
  var busy = { merchant: false, customer: false };
  var openLists = new Set(); // 'who:itemId' of lists whose rows are showing
  var seenWaiting = new Set(); // prompts this page saw waiting
  var finishedAt = new Map(); // checkoutRequestId -> when this page saw it answered
  var dismissed = new Set(); // outcome cards closed by hand
  var seenCounts = { merchant: -1, customer: -1 }; // for the tab badges
  var ui = { phones: {} };

  // ---- building the page (once) ----
  function build() {
    var app = document.getElementById('app');
    app.textContent = '';
    var langBox = h('div.lang', { role: 'group' });
    label(langBox, 'language', 'aria-label');
    ['en', 'sw'].forEach(function (code) {
      langBox.append(h('button', { type: 'button', dataset: { lang: code }, text: code === 'en' ? 'English' : 'Kiswahili', on: { click: function () { setLang(code); } } }));
    });
    ui.langBox = langBox;
    app.append(h('header.top', null,
      h('div.brand', null, label(h('h1'), 'title'), label(h('p.sub'), 'subtitle')),
      langBox));

    var tabs = h('nav.tabs');
    WHO.forEach(function (who) {
      var badge = h('span.badge', { hidden: true });
      var btn = h('button', { type: 'button', dataset: { show: who }, on: { click: function () { show(who); } } }, label(h('span'), who), badge);
      ui.phones[who] = { tab: btn, tabBadge: badge };
      tabs.append(btn);
    });
    app.append(tabs);

    var stage = h('div.stage');
    WHO.forEach(function (who) { stage.append(buildPhone(who)); });
    stage.append(buildPanel());
    app.append(stage);
    show(view);
    applyLang();
  }

  function buildPhone(who) {
    var p = ui.phones[who];
    p.number = h('span.number');
    p.chat = h('div.chat', { role: 'log', 'aria-live': 'polite' });
    p.empty = label(h('p.chat-empty'), 'empty');
    p.layer = h('div.mpesa-layer');
    p.error = h('p.phone-error', { role: 'alert', hidden: true });
    p.input = h('input', { name: 'message', type: 'text', autocomplete: 'off', maxlength: '4096' });
    label(p.input, 'placeholder', 'placeholder');
    p.sendBtn = label(h('button', { type: 'submit', text: '\u27A4' }), 'send', 'aria-label');
    p.form = h('form.composer', { on: { submit: function (ev) { ev.preventDefault(); sendText(who); } } }, p.input, p.sendBtn);
    p.bubbles = new Map(); // item id -> { el, sig, ticks }
    p.smsList = h('ul.sms-list');
    p.smsCount = h('span.badge', { hidden: true });
    p.smsEmpty = label(h('p.muted'), 'smsEmpty');
    p.history = h('ul.prompt-history');
    p.historyBox = h('section.prompts-box', { hidden: true }, label(h('h2'), 'prompts'), p.history);
    var sub = h('p.wa-sub', null, label(h('span'), who), ' \u00B7 ', p.number);
    p.root = h('section.phone', { dataset: { phone: who } },
      h('div.device', null,
        h('header.wa-head', null, h('span.avatar', { 'aria-hidden': 'true', text: 'IQ' }), h('div', null, h('p.wa-name', { text: 'InvoiceIQ' }), sub)),
        h('div.wa-body', null, p.chat, p.empty, p.layer),
        p.error,
        p.form),
      h('section.sms-box', { dataset: { smsInbox: who } }, h('h2', null, label(h('span'), 'sms'), p.smsCount), p.smsEmpty, p.smsList),
      p.historyBox);
    return p.root;
  }

  function buildPanel() {
    ui.error = h('p.error-line', { role: 'alert', hidden: true });
    ui.note = h('p.note', { role: 'status' });
    ui.switches = {};
    var fs = h('fieldset.switches', null, label(h('legend'), 'scenarios'));
    SWITCHES.forEach(function (name) {
      var box = h('input', { type: 'checkbox', name: name, on: { change: function () { setSwitch(name, box); } } });
      ui.switches[name] = box;
      fs.append(h('label.switch', null, box, h('span', null, label(h('strong'), 'sw_' + name), label(h('small'), 'swh_' + name))));
    });
    ui.reconcileBtn = label(h('button.primary', { type: 'button', dataset: { action: 'reconcile' }, on: { click: reconcile } }), 'reconcile');
    ui.resetBtn = label(h('button', { type: 'button', dataset: { action: 'reset' }, on: { click: reset } }), 'reset');
    ui.log = h('ul.log');
    ui.logEmpty = label(h('p.muted'), 'logEmpty');
    return h('aside.panel', null, ui.error, fs,
      h('div.actions', null, ui.reconcileBtn, ui.resetBtn), ui.note,
      h('section.log-box', null, label(h('h2'), 'log'), ui.logEmpty, ui.log));
  }

  function show(who) {
    view = who;
    WHO.forEach(function (w) {
      var p = ui.phones[w];
      p.root.classList.toggle('is-shown', w === who);
      p.tab.setAttribute('aria-pressed', String(w === who));
    });
    var chat = ui.phones[who].chat;
    chat.scrollTop = chat.scrollHeight;
    updateBadges();
  }

  function setLang(code) {
    lang = code;
    try { localStorage.setItem(LANG_KEY, code); } catch (e) { /* ignore */ }
    applyLang();
    if (state) render(state, true);
  }
  function applyLang() {
    document.documentElement.lang = lang;
    document.title = t('title');
    relabel();
    ui.langBox.querySelectorAll('button').forEach(function (b) { b.setAttribute('aria-pressed', String(b.dataset.lang === lang)); });
  }

  // ---- rendering a state ----
  function render(s, force) {
    state = s;
    WHO.forEach(function (who) {
      var p = ui.phones[who];
      p.number.textContent = s.phones[who].display;
      renderChat(who, s.chats[who], force);
      renderSms(who, s.sms[who], force);
      renderPrompts(who, s, force);
      applyBusy(who);
    });
    SWITCHES.forEach(function (name) {
      var box = ui.switches[name];
      if (!box.disabled) box.checked = Boolean(s.switches[name]);
    });
    renderLog(s.log, force);
    updateBadges();
  }

  function renderChat(who, items, force) {
    var p = ui.phones[who];
    var box = p.chat;
    var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    var changed = false;
    var seen = new Set();
    var prev = null;
    items.forEach(function (item) {
      // The content decides the element; the status only changes the ticks.
      var sig = lang + JSON.stringify([item.from, item.at, item.content]);
      var entry = p.bubbles.get(item.id);
      if (!entry || entry.sig !== sig || force) {
        var built = buildBubble(who, item);
        if (entry) entry.el.replaceWith(built.el);
        entry = { el: built.el, sig: sig, ticks: built.ticks, status: null };
        p.bubbles.set(item.id, entry);
        changed = true;
      }
      if (entry.status !== item.status) {
        setTicks(entry.ticks, item.status);
        entry.status = item.status;
        entry.el.classList.toggle('is-failed', item.status === 'failed');
      }
      seen.add(item.id);
      var want = prev ? prev.nextSibling : box.firstChild;
      if (want !== entry.el) box.insertBefore(entry.el, want);
      prev = entry.el;
    });
    p.bubbles.forEach(function (entry, id) {
      if (!seen.has(id)) {
        entry.el.remove();
        p.bubbles.delete(id);
      }
    });
    p.empty.hidden = items.length > 0;
    if (changed && atBottom) box.scrollTop = box.scrollHeight;
  }

  function setTicks(node, status) {
    node.dataset.status = status;
    node.textContent = TICKS[status] || '';
    node.setAttribute('aria-label', t('tk_' + status));
    node.title = t('tk_' + status);
  }

  function buildBubble(who, item) {
    var c = item.content;
    var card = h('div.card');
    var el = h('div.bubble', { dataset: { from: item.from, id: item.id, type: c.type } }, card);
    if (c.type === 'template') card.append(h('p.tpl', { text: t('template') + ' \u00B7 ' + c.name }));
    var text = c.type === 'tap' ? c.title : c.body;
    card.append(richText(h('div.body'), text || ''));
    if (c.type === 'buttons' && c.footer) card.append(h('p.footer', { text: c.footer }));
    // Bot bubbles get delivery ticks (.ticks); the phone's own messages a quieter status mark.
    var ticks = h(item.from === 'bot' ? 'span.ticks' : 'span.sendstate');
    card.append(h('span.meta', null, h('time', { datetime: item.at, text: hhmm(item.at) }), ticks));

    if (c.type === 'buttons' || c.type === 'template') {
      var replies = h('div.replies');
      c.buttons.forEach(function (b) {
        var data = c.type === 'buttons' ? { buttonId: b.id } : { payload: b.payload };
        var body = c.type === 'buttons' ? { reply: { id: b.id, title: b.title } } : { templateButton: { payload: b.payload, title: b.title } };
        replies.append(h('button.reply', { type: 'button', dataset: data, text: b.title, on: { click: function () { send(who, body); } } }));
      });
      el.append(replies);
    } else if (c.type === 'list') {
      var key = who + ':' + item.id;
      var rows = h('div.list-rows', { hidden: !openLists.has(key) });
      var opener = h('button.reply.list-open', { type: 'button', 'aria-expanded': String(openLists.has(key)), text: '\u2630 ' + c.button });
      opener.addEventListener('click', function () {
        var open = rows.hidden;
        rows.hidden = !open;
        opener.setAttribute('aria-expanded', String(open));
        if (open) { openLists.add(key); rows.scrollIntoView({ block: 'nearest' }); } else openLists.delete(key);
      });
      c.sections.forEach(function (section) {
        if (section.title) rows.append(h('p.section-title', { text: section.title }));
        section.rows.forEach(function (r) {
          rows.append(h('button.row', {
            type: 'button', dataset: { rowId: r.id },
            on: { click: function () { send(who, { listReply: { id: r.id, title: r.title } }); } },
          }, h('span.row-title', { text: r.title }), r.description ? h('span.row-desc', { text: r.description }) : null));
        });
      });
      el.append(h('div.replies', null, opener, rows));
    }
    return { el: el, ticks: ticks };
  }

  function renderSms(who, items, force) {
    var p = ui.phones[who];
    var sig = lang + JSON.stringify(items);
    if (p.smsSig === sig && !force) return;
    p.smsSig = sig;
    p.smsList.textContent = '';
    newestFirst(items).forEach(function (sms) { // like an inbox
      p.smsList.append(h('li.sms', { dataset: { id: sms.id } },
        h('p.sms-head', null, h('span.sms-from', { text: sms.from }), h('time', { datetime: sms.at, text: hhmm(sms.at) })),
        h('p.sms-body', { text: sms.body })));
    });
    p.smsEmpty.hidden = items.length > 0;
    p.smsCount.hidden = items.length === 0;
    p.smsCount.textContent = String(items.length);
  }

  /** A copy sorted by `at`, newest first (the contract does not fix the order of the log or SMS). */
  function newestFirst(items) {
    return items.slice().sort(function (a, b) { return (Date.parse(b.at) || 0) - (Date.parse(a.at) || 0); });
  }

  function outcomeText(pr) {
    if (pr.state === 'paid') return pr.receipt ? t('st_paid', { r: pr.receipt }) : t('st_paidNoReceipt');
    return t('st_' + pr.state);
  }

  function renderPrompts(who, s, force) {
    var p = ui.phones[who];
    var mine = s.prompts.filter(function (pr) { return pr.who === who; });
    var now = Date.now();
    mine.forEach(function (pr) {
      if (pr.state === 'waiting') seenWaiting.add(pr.checkoutRequestId);
      else if (seenWaiting.has(pr.checkoutRequestId) && !finishedAt.has(pr.checkoutRequestId)) finishedAt.set(pr.checkoutRequestId, now);
    });
    // The card: the newest waiting prompt, else one answered moments ago (its outcome).
    var current = null;
    for (var i = mine.length - 1; i >= 0 && !current; i -= 1) if (mine[i].state === 'waiting') current = mine[i];
    for (var j = mine.length - 1; j >= 0 && !current; j -= 1) {
      var id = mine[j].checkoutRequestId;
      if (finishedAt.has(id) && now - finishedAt.get(id) < OUTCOME_MS && !dismissed.has(id)) current = mine[j];
    }
    var cardSig = current ? lang + JSON.stringify([current.checkoutRequestId, current.state, current.receipt, current.callback, s.demoPin]) : '';
    if (cardSig !== p.cardSig || force) {
      var pin = p.card && p.card.dataset.checkout === (current && current.checkoutRequestId) ? p.card.querySelector('input[name="pin"]') : null;
      var keepPin = pin ? pin.value : '';
      var hadFocus = pin && document.activeElement === pin;
      p.layer.textContent = '';
      p.card = current ? buildPromptCard(who, current, s.demoPin) : null;
      if (p.card) {
        p.layer.append(p.card);
        var newPin = p.card.querySelector('input[name="pin"]');
        if (newPin) {
          newPin.value = keepPin;
          // Take the focus only if nobody is typing elsewhere.
          var idle = !document.activeElement || document.activeElement === document.body;
          if (hadFocus || (!pin && idle)) newPin.focus({ preventScroll: true });
        }
      }
      p.layer.classList.toggle('is-open', Boolean(p.card));
      p.cardSig = cardSig;
    }
    if (p.countdown && current && current.state === 'waiting') {
      var left = Math.max(0, Math.ceil((Date.parse(current.expiresAt) - now) / 1000));
      p.countdown.textContent = isNaN(left) ? '' : t('expires', { s: left });
    }
    // History: every answered prompt on this phone, newest first.
    var done = mine.filter(function (pr) { return pr.state !== 'waiting'; }).reverse();
    var histSig = lang + JSON.stringify(done);
    if (histSig !== p.histSig || force) {
      p.histSig = histSig;
      p.history.textContent = '';
      done.forEach(function (pr) {
        var cb = t('cb_' + pr.callback);
        p.history.append(h('li.prompt-line', { dataset: { checkout: pr.checkoutRequestId, state: pr.state, callback: pr.callback } },
          h('time', { datetime: pr.createdAt, text: hhmm(pr.createdAt) }), ' ',
          h('span', { text: ksh(pr.amount) + ' \u2192 ' + pr.accountReference + ': ' }),
          h('strong', { text: outcomeText(pr) }),
          cb ? h('span.cb', { dataset: { callback: pr.callback }, text: ' \u00B7 ' + cb }) : null));
      });
      p.historyBox.hidden = done.length === 0;
    }
  }

  function buildPromptCard(who, pr, demoPin) {
    var p = ui.phones[who];
    var id = pr.checkoutRequestId;
    var card = h('form.mpesa-prompt', { dataset: { state: pr.state, checkout: id }, role: 'dialog', 'aria-label': 'M-PESA' });
    card.append(h('p.mp-title', { text: 'M-PESA' }));
    p.countdown = null;
    if (pr.state === 'waiting') {
      var pin = h('input', { name: 'pin', type: 'password', inputmode: 'numeric', autocomplete: 'off', maxlength: '6', 'aria-label': t('enterPin') });
      var err = h('p.mp-error', { role: 'alert', hidden: true });
      var buttons = [
        h('button', { type: 'button', dataset: { action: 'cancel' }, text: t('cancel') }),
        h('button.mp-ok', { type: 'submit', dataset: { action: 'pay' }, text: t('ok') }),
      ];
      var timeoutBtn = h('button.mp-link', { type: 'button', dataset: { action: 'timeout' }, text: t('timeout') });
      var act = function (body) {
        err.hidden = true;
        [buttons[0], buttons[1], timeoutBtn].forEach(function (b) { b.disabled = true; });
        api('POST', '/simulator/api/prompts/' + encodeURIComponent(id), body).then(function (res) {
          if (res && res.state && res.state !== 'waiting') {
            seenWaiting.add(id);
            if (!finishedAt.has(id)) finishedAt.set(id, Date.now());
          }
          refresh();
        }, function (e) {
          err.textContent = e.message;
          err.hidden = false;
          [buttons[0], buttons[1], timeoutBtn].forEach(function (b) { b.disabled = false; });
        });
      };
      card.addEventListener('submit', function (ev) {
        ev.preventDefault();
        if (!pin.value) { err.textContent = t('pinFormat'); err.hidden = false; pin.focus(); return; }
        act({ action: 'pin', pin: pin.value });
      });
      buttons[0].addEventListener('click', function () { act({ action: 'cancel' }); });
      timeoutBtn.addEventListener('click', function () { act({ action: 'timeout' }); });
      p.countdown = h('p.mp-countdown');
      card.append(
        h('p.mp-text', { text: t('payQ', { amount: ksh(pr.amount), ref: pr.accountReference }) + ' ' + t('enterPin') }),
        pin, err,
        h('div.mp-buttons', null, buttons[0], buttons[1]),
        h('p.mp-hint', { text: t('demoPin', { pin: demoPin }) }),
        h('div.mp-foot', null, p.countdown, timeoutBtn));
    } else {
      var cb = t('cb_' + pr.callback);
      card.append(
        h('p.mp-text', { text: ksh(pr.amount) + ' \u2192 ' + pr.accountReference }),
        h('p.mp-outcome', { text: outcomeText(pr) + (cb ? ' \u00B7 ' + cb : '') }),
        h('div.mp-buttons', null, h('button.mp-ok', {
          type: 'button', dataset: { action: 'close' }, text: t('close'),
          on: { click: function () { dismissed.add(id); render(state); } },
        })));
    }
    return card;
  }

  function renderLog(items, force) {
    var recent = newestFirst(items).slice(0, 30);
    var sig = lang + JSON.stringify(recent.map(function (l) { return l.id; }));
    if (sig === ui.logSig && !force) return;
    ui.logSig = sig;
    ui.log.textContent = '';
    recent.forEach(function (l) {
      ui.log.append(h('li', { dataset: { id: l.id } }, h('time', { datetime: l.at, text: hhmm(l.at) }), ' ', h('span', { text: l.text })));
    });
    ui.logEmpty.hidden = items.length > 0;
  }

  /** A dot with the count of new items on the tab of the phone that is not showing. */
  function updateBadges() {
    if (!state) return;
    WHO.forEach(function (who) {
      var p = ui.phones[who];
      var count = state.chats[who].length + state.sms[who].length;
      if (who === view || seenCounts[who] < 0 || count < seenCounts[who]) seenCounts[who] = count;
      var fresh = count - seenCounts[who];
      p.tabBadge.hidden = fresh <= 0;
      p.tabBadge.textContent = fresh > 0 ? String(fresh) : '';
    });
  }

  function applyBusy(who) {
    var p = ui.phones[who];
    p.sendBtn.disabled = busy[who];
    p.chat.querySelectorAll('button[data-button-id], button[data-row-id], button[data-payload]').forEach(function (b) { b.disabled = busy[who]; });
  }

  // ---- actions ----
  function phoneError(who, message) {
    var p = ui.phones[who];
    p.error.textContent = message || '';
    p.error.hidden = !message;
  }
  function panelError(message) {
    ui.error.textContent = message || '';
    ui.error.hidden = !message;
  }

  function send(who, body) {
    if (busy[who]) return Promise.resolve(false);
    busy[who] = true;
    applyBusy(who);
    phoneError(who, '');
    return api('POST', '/simulator/api/phones/' + who + '/send', body).then(function () {
      return true;
    }, function (e) {
      phoneError(who, e.message);
      return false;
    }).then(function (ok) {
      busy[who] = false;
      applyBusy(who);
      refresh();
      return ok;
    });
  }

  function sendText(who) {
    var p = ui.phones[who];
    var text = p.input.value.trim();
    if (!text) { p.input.focus(); return; }
    var sent = p.input.value;
    send(who, { text: text }).then(function (ok) {
      if (ok && p.input.value === sent) p.input.value = ''; // unless the user typed on meanwhile
      p.chat.scrollTop = p.chat.scrollHeight;
    });
  }

  function setSwitch(name, box) {
    var body = {};
    body[name] = box.checked;
    box.disabled = true;
    panelError('');
    api('PUT', '/simulator/api/switches', body).then(function (sw) {
      box.disabled = false;
      if (sw && typeof sw[name] === 'boolean') box.checked = sw[name];
      refresh();
    }, function (e) {
      box.disabled = false;
      box.checked = !box.checked;
      panelError(e.message);
    });
  }

  function reconcile() {
    ui.reconcileBtn.disabled = true;
    panelError('');
    ui.note.textContent = '';
    api('POST', '/simulator/api/reconcile', {}).then(function (r) {
      r = r || {};
      ui.note.textContent = t('reconciled', { q: r.queried || 0, a: r.applied || 0, e: r.expired || 0 });
    }, function (e) {
      panelError(e.message);
    }).then(function () {
      ui.reconcileBtn.disabled = false;
      refresh();
    });
  }

  function reset() {
    ui.resetBtn.disabled = true;
    panelError('');
    ui.note.textContent = '';
    api('POST', '/simulator/api/reset', {}).then(function () {
      openLists.clear();
      seenWaiting.clear();
      finishedAt.clear();
      dismissed.clear();
      WHO.forEach(function (who) { phoneError(who, ''); });
      ui.note.textContent = t('resetDone');
    }, function (e) {
      panelError(e.message);
    }).then(function () {
      ui.resetBtn.disabled = false;
      refresh();
    });
  }

  // ---- polling: one request at a time; an action asks for a fresh state right away ----
  var inFlight = false;
  var again = false;
  var timer = null;
  var pollFailed = false;
  function refresh() {
    if (inFlight) { again = true; return; }
    clearTimeout(timer);
    inFlight = true;
    api('GET', '/simulator/api/state').then(function (s) {
      if (pollFailed) { pollFailed = false; panelError(''); }
      render(s, false);
      if (document.body.dataset.ready !== 'true') {
        WHO.forEach(function (who) { ui.phones[who].chat.scrollTop = ui.phones[who].chat.scrollHeight; });
        document.body.dataset.ready = 'true';
      }
    }, function (e) {
      pollFailed = true;
      panelError(e.message);
    }).then(function () {
      inFlight = false;
      if (again) { again = false; refresh(); return; }
      timer = setTimeout(refresh, POLL_MS);
    });
  }

  build();
  refresh();
})();
