// The one place other folders get Prisma types from: only src/persistence imports the generated client.
// The client class is exported as a type only; a live client comes from openDatabase().
export type { PrismaClient } from './generated/client.js';
export { Prisma, $Enums } from './generated/client.js';
export * from './generated/enums.js';
export type { Account, Device, LoginFlow, OneTimePassword, LoginEvent, OidcPayload, DevMail } from './generated/client.js';
