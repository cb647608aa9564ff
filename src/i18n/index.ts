import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import i18next, { type Resource, type ResourceLanguage, type TFunction } from 'i18next';

/** Japanese first (the default), English second. */
export const LOCALES = ['ja', 'en'] as const;
export type Locale = (typeof LOCALES)[number];
export const DEFAULT_LOCALE: Locale = 'ja';

const localesDir = join(dirname(fileURLToPath(import.meta.url)), 'locales');

/** Loads every `locales/<lang>/<namespace>.json`; each feature keeps its texts in its own namespace. */
function loadResources(): Resource {
  const resources: Resource = {};
  for (const lang of LOCALES) {
    const namespaces: ResourceLanguage = {};
    for (const file of readdirSync(join(localesDir, lang))) {
      if (!file.endsWith('.json')) continue;
      namespaces[file.slice(0, -5)] = JSON.parse(readFileSync(join(localesDir, lang, file), 'utf8')) as ResourceLanguage;
    }
    resources[lang] = namespaces;
  }
  return resources;
}

const instance = i18next.createInstance();
const resources = loadResources();
await instance.init({
  resources,
  lng: DEFAULT_LOCALE,
  fallbackLng: DEFAULT_LOCALE,
  supportedLngs: [...LOCALES],
  ns: Object.keys(resources[DEFAULT_LOCALE] ?? {}),
  defaultNS: 'common',
  interpolation: { escapeValue: false }, // pug escapes on output
  returnNull: false,
  initAsync: false,
});

export function isLocale(value: unknown): value is Locale {
  return typeof value === 'string' && (LOCALES as readonly string[]).includes(value);
}

/** A translate function fixed to one locale; keys are `namespace:key`. */
export function translator(locale: Locale): TFunction {
  return instance.getFixedT(locale);
}

/**
 * Picks the locale: an explicit choice (query `lang`, the `lang` cookie, `ui_locales`) first, then
 * the Accept-Language header, then Japanese.
 */
export function negotiateLocale(explicit: Array<unknown>, acceptLanguage: string | undefined): Locale {
  for (const candidate of explicit) {
    // Anything but a string (a repeated ?lang=, an object from a parser) is no choice.
    if (typeof candidate !== 'string' || !candidate) continue;
    for (const tag of candidate.split(/\s+/)) {
      const base = tag.toLowerCase().split('-')[0];
      if (isLocale(base)) return base;
    }
  }
  if (acceptLanguage) {
    const ranked = acceptLanguage
      .split(',')
      .map((part) => {
        const [tag = '', ...params] = part.trim().split(';');
        const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
        return { base: tag.toLowerCase().split('-')[0], q: q ? Number(q.slice(2)) || 0 : 1 };
      })
      .sort((a, b) => b.q - a.q);
    for (const { base, q } of ranked) if (q > 0 && isLocale(base)) return base;
  }
  return DEFAULT_LOCALE;
}
