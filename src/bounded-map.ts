/**
 * Sets `key` in a map that holds at most `max` entries: when full, the oldest entry (first inserted)
 * goes. For the in-process memories of the hot path (valid cookie signatures, translated texts, the
 * login hand-off), which must not grow with traffic.
 */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  if (!map.has(key) && map.size >= max) map.delete(map.keys().next().value!);
  map.set(key, value);
}
