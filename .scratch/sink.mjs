import { SMTPServer } from 'smtp-server';
const s = new SMTPServer({ authOptional: true, disabledCommands: ['STARTTLS', 'AUTH'], disableReverseLookup: true, logger: false, onData(stream, session, cb) { stream.resume(); stream.on('end', cb); } });
s.listen(2599, '127.0.0.1');
