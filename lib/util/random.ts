// Seeded randomness for the data builder and the demo model: mulberry32, a
// small generator that is good enough to shuffle and initialise, seeded per
// purpose so that one random choice never shifts another (changing the
// context share leaves the split unchanged, for example).

/**
 * Uniform numbers in [0, 1) from `seed` and a purpose string. `salt` keeps
 * the streams of different users apart (the demo model's from the pair
 * builder's) while each keeps the numbers it was written with.
 */
export function seededRandom(seed: number, purpose: string, salt = 0x9e3779b9): () => number {
  let h = (seed | 0) ^ salt;
  for (let i = 0; i < purpose.length; i++) h = Math.imul(h ^ purpose.charCodeAt(i), 0x85ebca6b);
  let a = (h ^ (h >>> 13)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
