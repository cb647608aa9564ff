import type { Locale } from '../i18n/index.js';

/** The service is Japanese: Japanese pages show Japan time, as the manual does. */
export const JAPAN_TIME_ZONE = 'Asia/Tokyo';

const japanParts = new Intl.DateTimeFormat('en-US', {
  timeZone: JAPAN_TIME_ZONE,
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});

/**
 * An event's time for people: Japanese as the manual prints it (`2013/04/22 15:44:58`, Japan time);
 * English ISO-like in UTC with the zone named (`2013-04-22 06:44:58 UTC`), since its readers may be anywhere.
 */
export function formatEventTime(date: Date, locale: Locale): string {
  if (locale === 'en') return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  const part = Object.fromEntries(japanParts.formatToParts(date).map((p) => [p.type, p.value]));
  return `${part.year}/${part.month}/${part.day} ${part.hour}:${part.minute}:${part.second}`;
}
