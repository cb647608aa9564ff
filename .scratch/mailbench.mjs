import { renderMail } from '../dist/mail/mail.renderer.js';
import { parseMailJob } from '../dist/mail/mail.types.js';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
const job = { to: ['user@example.com'], template: 'login-otp', locale: 'ja', params: { userId: 'user1', otp: '123456', expiresMinutes: '10', clientName: 'Demo site' }, deliverBy: new Date(Date.now()+600000), otpId: '8a0c2a4c-2b84-4c3e-9d9e-0c1f0f3b2a11', tenantId: 'demo' };
const N = 3000;
function t(label, fn) { for (let i = 0; i < 300; i++) fn(); const c0 = process.cpuUsage(); for (let i = 0; i < N; i++) fn(); const c = process.cpuUsage(c0); console.log(label, ((c.user + c.system) / N).toFixed(1), 'µs'); }
async function ta(label, fn) { for (let i = 0; i < 300; i++) await fn(); const c0 = process.cpuUsage(); for (let i = 0; i < N; i++) await fn(); const c = process.cpuUsage(c0); console.log(label, ((c.user + c.system) / N).toFixed(1), 'µs'); }
t('parseMailJob', () => parseMailJob(job));
const r = renderMail(job);
t('renderMail', () => renderMail(job));
await ta('compose (text+html, base64)', () => new Promise((res, rej) => new MailComposer({ from: 'noreply@example.com', to: job.to, ...r, textEncoding: 'base64' }).compile().build((e, m) => e ? rej(e) : res(m))));
await ta('compose (text+html, default)', () => new Promise((res, rej) => new MailComposer({ from: 'noreply@example.com', to: job.to, ...r }).compile().build((e, m) => e ? rej(e) : res(m))));
await ta('compose (text only)', () => new Promise((res, rej) => new MailComposer({ from: 'noreply@example.com', to: job.to, subject: r.subject, text: r.text }).compile().build((e, m) => e ? rej(e) : res(m))));
console.log(r.html.length, r.text.length);
