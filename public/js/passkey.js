// Passkey ceremonies for the login, activation and account area forms, with @simplewebauthn/browser
// (served as /static/vendor/simplewebauthn-browser.js). A form opts in with data attributes:
//   data-passkey="register" | "authenticate"   runs the ceremony on submit, then posts the form;
//   data-passkey="autofill"                    offers passkeys in the user-ID field's autofill
//                                               (conditional mediation) and posts when one is picked;
//                                               its own submit button runs the ceremony as "authenticate"
//                                               does (browsers without autofill). A `hidden` autofill
//                                               form is shown once the browser supports passkeys;
//   data-passkey-options="<id>"                the id of a <script type="application/json"> holding
//                                               the server's options (a data block, not a script);
//   data-passkey-field="<name>"                the hidden input receiving the browser's answer (JSON);
//   data-passkey-cancelled / -unsupported      the messages shown when the user cancels, or when
//                                               the browser cannot do passkeys.
// Errors go to the element `[data-passkey-error]` inside the form (role=alert).
(function () {
  'use strict';
  var lib = window.SimpleWebAuthnBrowser;

  function options(form) {
    var el = document.getElementById(form.getAttribute('data-passkey-options'));
    return el ? JSON.parse(el.textContent) : null;
  }

  function showError(form, message) {
    var el = form.querySelector('[data-passkey-error]');
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
  }

  function post(form, answer) {
    var field = form.querySelector('input[name="' + (form.getAttribute('data-passkey-field') || 'response') + '"]');
    field.value = JSON.stringify(answer);
    form.setAttribute('data-passkey-done', '1');
    HTMLFormElement.prototype.submit.call(form);
  }

  function ceremony(form, autofill) {
    var kind = form.getAttribute('data-passkey');
    var optionsJSON = options(form);
    if (!optionsJSON) return Promise.resolve();
    var run = kind === 'register'
      ? lib.startRegistration({ optionsJSON: optionsJSON })
      : lib.startAuthentication({ optionsJSON: optionsJSON, useBrowserAutofill: !!autofill });
    return run.then(function (answer) { post(form, answer); });
  }

  function supported() {
    return !!lib && lib.browserSupportsWebAuthn();
  }

  document.querySelectorAll('form[data-passkey]').forEach(function (form) {
    var kind = form.getAttribute('data-passkey');
    if (kind === 'autofill') {
      if (!supported()) return;
      form.hidden = false;
      lib.browserSupportsWebAuthnAutofill().then(function (ok) {
        // A cancelled or abandoned autofill is not an error: the user simply typed an ID instead.
        if (ok) ceremony(form, true).catch(function () {});
      });
    }
    form.addEventListener('submit', function (event) {
      if (form.getAttribute('data-passkey-done')) return;
      event.preventDefault();
      if (!supported()) {
        showError(form, form.getAttribute('data-passkey-unsupported') || '');
        return;
      }
      ceremony(form, false).catch(function (err) {
        var message = form.getAttribute('data-passkey-cancelled') || String(err && err.message);
        showError(form, message);
      });
    });
  });
})();
