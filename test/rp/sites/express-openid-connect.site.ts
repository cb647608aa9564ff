// A relying site built with express-openid-connect, configured as its README shows for the code flow.
// Run by test/rp/express-openid-connect.test.ts with ISSUER, PORT, CLIENT_ID and CLIENT_SECRET.
import express from 'express';
import eoc from 'express-openid-connect';

// A CommonJS package whose exports Node cannot name statically.
const { auth, requiresAuth } = eoc;

const { ISSUER, PORT, CLIENT_ID, CLIENT_SECRET } = process.env;
const baseURL = `http://127.0.0.1:${PORT}`;
const app = express();
app.use(
  auth({
    issuerBaseURL: ISSUER,
    baseURL,
    clientID: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    secret: 'a-long-random-session-secret-for-the-test-0123456789',
    // The library's default is the implicit id_token flow; the provider offers the code flow only.
    authorizationParams: { response_type: 'code' },
    authRequired: false,
    // RP-initiated logout: /logout also ends the session at the provider.
    idpLogout: true,
    enableTelemetry: false,
  }),
);
app.get('/', (req, res) => {
  res.send(req.oidc.isAuthenticated() ? 'signed in' : 'signed out');
});
app.get('/profile', requiresAuth(), (req, res) => {
  res.json(req.oidc.user);
});
app.listen(Number(PORT), '127.0.0.1');
