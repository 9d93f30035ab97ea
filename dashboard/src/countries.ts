import { api } from "./api";

const names = new Intl.DisplayNames(["en"], { type: "region" });

export function countryName(code: string): string {
  try {
    return names.of(code) ?? code;
  } catch {
    return code;
  }
}

let cache: Promise<string[]> | undefined;

/** The codes nb-proxy accepts, sorted by English name. */
export function loadCountries(): Promise<string[]> {
  cache ??= api.countries().then((codes) => [...codes].sort((a, b) => countryName(a).localeCompare(countryName(b))));
  return cache;
}
